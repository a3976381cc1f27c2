//! The tool catalogue: every tool paywarden serves, once, with what it does to money. It is the
//! single definition behind read-only mode (which tools are hidden and refused), the policy's
//! `moves_money` fact, `paywarden policy check` and the docs' tool tables, so the server, the
//! CLI and the documentation can never disagree about which tool moves money (issue 12).

/// What a tool does, from reading to moving money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Reads only (provider state or paywarden's records). Shown in read-only mode.
    Read,
    /// Writes paywarden's or a provider's records but moves no money (e.g. a review flag).
    /// Hidden and refused in read-only mode; the policy sees `moves_money = false`.
    Write,
    /// Asks a payer for money (a payment link, a Multibanco reference, an MB WAY request): the
    /// payer approves each payment; nothing is paid out. Hidden in read-only mode; the policy
    /// sees `moves_money = true`.
    RequestsMoney,
    /// Moves money at the provider (capture, reversal, refund, rebill, chargeback), or runs an
    /// approved operation that does (`get_approval`). Hidden in read-only mode; the policy sees
    /// `moves_money = true`.
    MovesMoney,
}

impl Effect {
    /// The policy's `moves_money` fact for a tool with this effect.
    pub fn moves_money(self) -> bool {
        match self {
            Effect::Read | Effect::Write => false,
            Effect::RequestsMoney | Effect::MovesMoney => true,
        }
    }

    /// Whether read-only mode (`safety.read_only`) keeps the tool.
    pub fn shown_in_read_only(self) -> bool {
        match self {
            Effect::Read => true,
            Effect::Write | Effect::RequestsMoney | Effect::MovesMoney => false,
        }
    }
}

/// One tool of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolSpec {
    /// The tool's name, as its seed spells it.
    pub name: &'static str,
    /// The toolset serving it: `opp`, `ops`, `ifthenpay`, or `paywarden` (paywarden's own).
    pub toolset: &'static str,
    /// What it does to money.
    pub effect: Effect,
    /// The argument that carries the caller's idempotency key, when the tool takes one
    /// (ifthenpay's creations are keyed by their `order_id` instead).
    pub key_argument: Option<&'static str>,
}

const fn tool(
    name: &'static str,
    toolset: &'static str,
    effect: Effect,
    key_argument: Option<&'static str>,
) -> ToolSpec {
    ToolSpec {
        name,
        toolset,
        effect,
        key_argument,
    }
}

/// Every tool paywarden serves.
pub const CATALOG: &[ToolSpec] = &[
    // OPP (the Payments Orchestration Platform seed), camelCase arguments.
    tool(
        "perform_capture",
        "opp",
        Effect::MovesMoney,
        Some("idempotencyKey"),
    ),
    tool(
        "perform_reversal",
        "opp",
        Effect::MovesMoney,
        Some("idempotencyKey"),
    ),
    tool(
        "perform_refund",
        "opp",
        Effect::MovesMoney,
        Some("idempotencyKey"),
    ),
    tool(
        "perform_rebill",
        "opp",
        Effect::MovesMoney,
        Some("idempotencyKey"),
    ),
    tool(
        "perform_chargeback",
        "opp",
        Effect::MovesMoney,
        Some("idempotencyKey"),
    ),
    tool(
        "perform_chargeback_reversal",
        "opp",
        Effect::MovesMoney,
        Some("idempotencyKey"),
    ),
    tool("get_transactions", "opp", Effect::Read, None),
    tool("search_transactions", "opp", Effect::Read, None),
    // paywarden's own: runs an approved operation (of any toolset), once.
    tool("get_approval", "paywarden", Effect::MovesMoney, None),
    // Payment Ops (Stripe + the orders database), snake_case arguments.
    tool("lookup_customer", "ops", Effect::Read, None),
    tool("list_payments", "ops", Effect::Read, None),
    tool("get_order_history", "ops", Effect::Read, None),
    tool(
        "issue_refund",
        "ops",
        Effect::MovesMoney,
        Some("idempotency_key"),
    ),
    tool(
        "create_payment_link",
        "ops",
        Effect::RequestsMoney,
        Some("idempotency_key"),
    ),
    tool("revenue_summary", "ops", Effect::Read, None),
    tool("flag_for_review", "ops", Effect::Write, None),
    // ifthenpay, snake_case arguments; creations are keyed by tool, key and order_id.
    tool(
        "multibanco_create_reference",
        "ifthenpay",
        Effect::RequestsMoney,
        None,
    ),
    tool(
        "mbway_request_payment",
        "ifthenpay",
        Effect::RequestsMoney,
        None,
    ),
    tool("mbway_check_status", "ifthenpay", Effect::Read, None),
    tool(
        "payshop_create_reference",
        "ifthenpay",
        Effect::RequestsMoney,
        None,
    ),
    tool(
        "creditcard_create_payment",
        "ifthenpay",
        Effect::RequestsMoney,
        None,
    ),
    tool(
        "pinpay_create_payment",
        "ifthenpay",
        Effect::RequestsMoney,
        None,
    ),
    tool(
        "cofidis_create_payment",
        "ifthenpay",
        Effect::RequestsMoney,
        None,
    ),
    tool(
        "pix_create_payment",
        "ifthenpay",
        Effect::RequestsMoney,
        None,
    ),
    tool("payments_list", "ifthenpay", Effect::Read, None),
];

/// The catalogue entry of `name`, if paywarden serves such a tool.
pub fn spec(name: &str) -> Option<&'static ToolSpec> {
    CATALOG.iter().find(|t| t.name == name)
}

/// Whether `name` moves (or requests) money: the policy's `moves_money`. Unknown tools are
/// treated as moving money, so a mistake fails closed.
pub fn moves_money(name: &str) -> bool {
    spec(name).is_none_or(|t| t.effect.moves_money())
}

/// Whether read-only mode hides and refuses `name`. Unknown tools are hidden.
pub fn hidden_in_read_only(name: &str) -> bool {
    spec(name).is_none_or(|t| !t.effect.shown_in_read_only())
}

/// The tools read-only mode hides, in catalogue order.
pub fn hidden_in_read_only_tools() -> impl Iterator<Item = &'static str> {
    CATALOG
        .iter()
        .filter(|t| !t.effect.shown_in_read_only())
        .map(|t| t.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_listed_once() {
        let mut names: Vec<_> = CATALOG.iter().map(|t| t.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        assert_eq!(before, 25);
    }

    #[test]
    fn writes_are_hidden_in_read_only_mode_but_do_not_move_money() {
        assert!(hidden_in_read_only("flag_for_review"));
        assert!(!moves_money("flag_for_review"));
        assert!(moves_money("create_payment_link"));
        assert!(!hidden_in_read_only("get_transactions"));
        assert!(moves_money("no_such_tool") && hidden_in_read_only("no_such_tool"));
    }
}
