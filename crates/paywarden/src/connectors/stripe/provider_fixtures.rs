//! Stripe's own documented objects and errors (`tests/fixtures/providers/stripe/*.json`, each
//! naming its source and date) go through the connector's real decoding: the wire types, the
//! mapping onto paywarden's model, and `error_from_answer` for the error bodies. A fixture the
//! connector could not read would be a Stripe answer paywarden misreads.

use std::path::PathBuf;

use serde_json::Value;

use super::transformers::{
    WireCharge, WireCustomer, WireList, WirePaymentIntent, WirePaymentLink, WirePrice, WireProduct,
    WireRefund,
};
use super::{decode, error_from_answer, map, Answer, StripeError};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/providers/stripe")
}

fn answer(status: u16, body: &Value) -> Answer {
    Answer {
        status,
        body: body.to_string(),
        request_id: Some("req_fixture".into()),
        replayed: false,
    }
}

/// Decodes and maps one Stripe object as the connector does; returns its id.
fn parse_object(status: u16, object: &Value) -> String {
    let a = answer(status, object);
    let kind = object["object"].as_str().unwrap_or_default();
    match kind {
        "customer" => {
            map(&a, decode::<WireCustomer>(&a).unwrap().into_model())
                .unwrap()
                .expect("not a deleted customer")
                .id
        }
        "payment_intent" => {
            map(&a, decode::<WirePaymentIntent>(&a).unwrap().into_model())
                .unwrap()
                .id
        }
        "charge" => {
            map(&a, decode::<WireCharge>(&a).unwrap().into_model())
                .unwrap()
                .id
        }
        "refund" => {
            map(&a, decode::<WireRefund>(&a).unwrap().into_model())
                .unwrap()
                .id
        }
        "product" => decode::<WireProduct>(&a).unwrap().into_model().id,
        "price" => {
            map(&a, decode::<WirePrice>(&a).unwrap().into_model())
                .unwrap()
                .id
        }
        "payment_link" => decode::<WirePaymentLink>(&a).unwrap().into_model().id,
        other => panic!("no connector type for Stripe object {other:?}"),
    }
}

#[test]
fn the_connector_reads_every_documented_stripe_fixture() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/providers/stripe exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 13, "{files:?}");
    for file in &files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let name = file.display();
        for key in [
            "source",
            "retrieved",
            "api_version",
            "request",
            "status",
            "response",
        ] {
            assert!(doc.get(key).is_some(), "{name}: no {key:?}");
        }
        let status = u16::try_from(doc["status"].as_u64().unwrap()).unwrap();
        let response = &doc["response"];
        if status != 200 {
            let error = error_from_answer(&answer(status, response), "sk_test_fixture_key");
            let wire = &response["error"];
            match (&error, status) {
                (StripeError::Authentication { message, .. }, 401) => {
                    assert_eq!(Some(message.as_str()), wire["message"].as_str(), "{name}");
                }
                (StripeError::NotFound { param, .. }, _) => {
                    assert_eq!(param.as_deref(), wire["param"].as_str(), "{name}");
                }
                (
                    StripeError::Api {
                        code,
                        decline_code,
                        param,
                        ..
                    },
                    _,
                ) => {
                    assert_eq!(code.as_deref(), wire["code"].as_str(), "{name}");
                    assert_eq!(
                        decline_code.as_deref(),
                        wire["decline_code"].as_str(),
                        "{name}"
                    );
                    assert_eq!(param.as_deref(), wire["param"].as_str(), "{name}");
                }
                (other, _) => panic!("{name}: read as {other:?}"),
            }
            continue;
        }
        match response["object"].as_str() {
            Some("list") | Some("search_result") => {
                let a = answer(status, response);
                let list = decode::<WireList<Value>>(&a).unwrap();
                assert!(!list.data.is_empty(), "{name}");
                for item in &list.data {
                    assert_eq!(
                        Some(parse_object(status, item).as_str()),
                        item["id"].as_str()
                    );
                }
            }
            _ => assert_eq!(
                Some(parse_object(status, response).as_str()),
                response["id"].as_str(),
                "{name}"
            ),
        }
    }
}
