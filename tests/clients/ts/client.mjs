#!/usr/bin/env node
// A real TypeScript SDK client (@modelcontextprotocol/sdk, Streamable HTTP) against paywarden:
// lists the tools, reads a demo pre-authorization (get_transactions), then captures one unit of
// it through the confirm flow of the built-in policy: the first call returns
// `confirmation_required` with a `confirmationToken` and moves nothing, the same call with the
// token executes it. Prints one JSON line with what it saw; exits non-zero on any mismatch.
//
//   node client.mjs --url URL --header "X-Entity-Id: ..." --header "X-Token: ..." --pa pw-demo-0000
//
// Driven by tests/e2e/test_node_clients.py (scripts/test.sh).

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const OPP_TOOLS = [
    "get_transactions",
    "perform_capture",
    "perform_chargeback",
    "perform_chargeback_reversal",
    "perform_rebill",
    "perform_refund",
    "perform_reversal",
    "search_transactions",
];
const SANDBOX = "[SANDBOX";

function parseArgs(argv) {
    const opts = { headers: {} };
    for (let i = 0; i < argv.length; i++) {
        const next = () => argv[++i];
        switch (argv[i]) {
            case "--url": opts.url = next(); break;
            case "--pa": opts.pa = next(); break;
            case "--header": {
                const [name, ...rest] = next().split(":");
                opts.headers[name.trim()] = rest.join(":").trim();
                break;
            }
            default: throw new Error(`unknown argument ${argv[i]}`);
        }
    }
    if (!opts.url || !opts.pa) throw new Error("usage: client.mjs --url URL [--header 'Name: value']... --pa MERCHANT_TRANSACTION_ID");
    return opts;
}

/** structuredContent of a successful tool result, after the checks every result must pass. */
function ok(result, what) {
    const text = result.content?.find((c) => c.type === "text")?.text ?? "";
    assert.notEqual(result.isError, true, `${what}: isError: ${text}`);
    assert.ok(text.startsWith(SANDBOX), `${what}: no sandbox banner: ${text.slice(0, 200)}`);
    assert.equal(typeof result.structuredContent, "object", `${what}: no structuredContent`);
    return result.structuredContent;
}

async function main() {
    const opts = parseArgs(process.argv.slice(2));
    const transport = new StreamableHTTPClientTransport(new URL(opts.url), { requestInit: { headers: opts.headers } });
    const client = new Client({ name: "paywarden-ts-sdk-test", version: "1.0.0" });
    await client.connect(transport);
    const seen = { protocolVersion: transport.protocolVersion, sessionId: transport.sessionId, server: client.getServerVersion() };
    try {
        // 1. tools
        const { tools } = await client.listTools();
        const names = tools.map((t) => t.name).sort();
        for (const name of OPP_TOOLS) assert.ok(names.includes(name), `tools/list lacks ${name}: ${names}`);
        for (const t of tools) {
            assert.equal(t.inputSchema?.type, "object", `${t.name}: inputSchema`);
            assert.equal(t.outputSchema?.type, "object", `${t.name}: outputSchema`);
        }
        const capture = tools.find((t) => t.name === "perform_capture");
        assert.equal(capture.annotations?.destructiveHint, true, "perform_capture is destructive");
        assert.equal(tools.find((t) => t.name === "get_transactions").annotations?.readOnlyHint, true, "get_transactions is read-only");
        seen.tools = names;

        // 2. a read: the demo PA by its merchant transaction id
        const found = ok(await client.callTool({ name: "get_transactions", arguments: { merchantTransactionId: opts.pa, includeLinkedTransactions: true } }), "get_transactions");
        const payments = found.payments ?? [];
        assert.equal(payments.length, 1, `expected the one PA ${opts.pa}: ${JSON.stringify(found)}`);
        const pa = payments[0];
        assert.equal(pa.paymentType, "PA", `${opts.pa} is not an uncaptured PA: ${JSON.stringify(pa)}`);
        seen.read = { id: pa.id, amount: pa.amount, currency: pa.currency };

        // 3. a confirmed capture of one minor-unit-exact major unit (e.g. 1.00 EUR)
        const exponent = pa.amount.includes(".") ? pa.amount.split(".")[1].length : 0;
        const amount = exponent ? `1.${"0".repeat(exponent)}` : "1";
        const args = { referenceId: pa.id, amount, currency: pa.currency, idempotencyKey: `ts-sdk-${randomUUID()}` };
        const preview = ok(await client.callTool({ name: "perform_capture", arguments: args }), "perform_capture (preview)");
        assert.equal(preview.status, "confirmation_required", `expected confirmation_required: ${JSON.stringify(preview)}`);
        const token = preview.confirmation?.token;
        assert.match(token ?? "", /^pwc_[0-9a-f]{64}$/, `confirmationToken: ${JSON.stringify(preview.confirmation)}`);
        assert.equal(preview.id ?? null, null, "a preview must not carry a transaction");

        const executed = ok(await client.callTool({ name: "perform_capture", arguments: { ...args, confirmationToken: token } }), "perform_capture (confirmed)");
        assert.equal(executed.status, "executed", `expected executed: ${JSON.stringify(executed)}`);
        assert.equal(executed.paymentType, "CP");
        assert.equal(executed.referencedId, pa.id);
        assert.equal(executed.amount, amount);
        assert.equal(executed.resultCategory, "success", JSON.stringify(executed.result));
        seen.capture = { id: executed.id, amount: executed.amount, currency: executed.currency, status: executed.status };
    } finally {
        await transport.terminateSession().catch(() => {});
        await client.close();
    }
    console.log(JSON.stringify(seen));
}

main().catch((e) => {
    console.error(e?.stack ?? String(e));
    process.exit(1);
});
