#!/usr/bin/env node
// Runs the official MCP conformance suite (@modelcontextprotocol/conformance) against a real
// `paywarden serve`, for both protocol eras and every MCP endpoint, and compares the outcome
// with expected-failures.yaml.
//
//   node tests/conformance/run.mjs [--era ERA]... [--endpoint PATH]... [--bin PAYWARDEN]
//
// Needs Node.js >= 22 (scripts/setup-node.sh installs it) and `npm ci` in tests/conformance
// (scripts/test.sh does both). The server runs on 127.0.0.1 port 0 with a temporary data
// directory, so it starts the offline OPP emulator with the demo data, under the built-in
// policy, exactly as `paywarden serve` does for a user.
//
// The suite cannot send custom headers, so it talks to paywarden through header-proxy.mjs,
// which adds the demo credentials (X-Entity-Id, X-Token) and passes everything else through.
//
// Exit status: 0 when every scenario the suite scores passes or is an expected failure (with
// every listed failing check still failing); 1 when a scenario fails unexpectedly, or an
// expected failure now passes (a stale entry: remove it from expected-failures.yaml).

import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { startHeaderProxy } from "./header-proxy.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");

// Every MCP endpoint of `paywarden serve` that the suite runs against. A new endpoint is one
// more line here (it gets the same credentials and the same expected failures).
const ENDPOINTS = [
    "/mcp",
    "/agentic/v1/mcp",
    "/mcp/payments/",
];

// The demo entity's credentials (README, "Demo credentials"): valid only against the emulator.
const DEMO_HEADERS = {
    "X-Entity-Id": "8ac7a4c9000000000000000000000001",
    "X-Token": "pw_demo_sandbox_token_only_valid_against_the_paywarden_emulator",
};

// The suite runs, per protocol era: which pinned line of the suite, and how. The suite's own
// notion of what is scored decides what is gated: for 2025-11-25 the stable line's active suite,
// and, as a cross-check with the newer line's stricter wire-schema validation, exactly the
// scenarios the 0.2 line requires for 2025-11-25; for 2026-07-28 exactly the scenarios that
// revision requires (`--requirements`), the extension (tasks) and pending scenarios it also runs
// being reported but never scored. Every run of an era shares that era's expected failures.
const RUNS = [
    {
        era: "2025-11-25",
        pkg: "conformance-2025-11-25",
        args: (url) => ["server", "--url", url, "--suite", "active"],
        scored: null, // all it runs
    },
    {
        era: "2025-11-25",
        pkg: "conformance-2026-07-28",
        args: (url) => ["server", "--url", url, "--requirements", "2025-11-25"],
        scored: (cli) => requiredScenarios(cli, "2025-11-25"),
    },
    {
        era: "2026-07-28",
        pkg: "conformance-2026-07-28",
        args: (url) => ["server", "--url", url, "--requirements", "2026-07-28"],
        scored: (cli) => requiredScenarios(cli, "2026-07-28"),
    },
];
const ERAS = [...new Set(RUNS.map((r) => r.era))];

const SUITE_TIMEOUT_MS = 10 * 60 * 1000;

function usage(message) {
    if (message) console.error(`run.mjs: ${message}`);
    console.error("usage: node tests/conformance/run.mjs [--era ERA]... [--endpoint PATH]... [--bin PAYWARDEN]");
    process.exit(2);
}

function parseArgs(argv) {
    const opts = { eras: [], endpoints: [], bin: process.env.PAYWARDEN_BIN || path.join(ROOT, "target", "debug", "paywarden") };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const value = () => argv[++i] ?? usage(`${a} needs a value`);
        if (a === "--era") opts.eras.push(value());
        else if (a === "--endpoint") opts.endpoints.push(value());
        else if (a === "--bin") opts.bin = value();
        else if (a === "-h" || a === "--help") usage();
        else usage(`unknown argument ${a}`);
    }
    if (opts.eras.length === 0) opts.eras = ERAS;
    if (opts.endpoints.length === 0) opts.endpoints = ENDPOINTS;
    for (const era of opts.eras) if (!ERAS.includes(era)) usage(`unknown era ${era} (known: ${ERAS.join(", ")})`);
    return opts;
}

function cliPath(pkg) {
    const p = path.join(HERE, "node_modules", pkg, "dist", "index.js");
    if (!fs.existsSync(p)) {
        console.error(`run.mjs: ${p} is missing: run \`npm ci --prefix tests/conformance\` (scripts/test.sh does)`);
        process.exit(1);
    }
    return p;
}

function run(command, args, { timeoutMs = SUITE_TIMEOUT_MS, env = process.env, cwd } = {}) {
    return new Promise((resolve) => {
        const child = spawn(command, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        child.stdout.on("data", (d) => (out += d));
        child.stderr.on("data", (d) => (out += d));
        const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
        child.on("close", (code, signal) => {
            clearTimeout(timer);
            resolve({ code, signal, out });
        });
    });
}

/** The server scenarios a spec revision requires, from the suite's own frozen list. */
async function requiredScenarios(cli, revision) {
    const { code, out } = await run(process.execPath, [cli, "list", "--server", "--requirements", revision]);
    if (code !== 0) throw new Error(`conformance list --requirements ${revision} failed:\n${out}`);
    const section = out.split(/Server scenarios[^\n]*\n/)[1]?.split(/\n\s*\n/)[0] ?? "";
    const names = [...section.matchAll(/^\s*-\s+(\S+)\s*$/gm)].map((m) => m[1]);
    if (names.length === 0) throw new Error(`no required server scenarios found in:\n${out}`);
    return new Set(names);
}

// --- paywarden -------------------------------------------------------------------------------

async function startPaywarden(bin, dataDir) {
    if (!fs.existsSync(bin)) {
        console.error(`run.mjs: ${bin} not found: build it first (cargo build -p paywarden; scripts/test.sh does)`);
        process.exit(1);
    }
    // The caller's PAYWARDEN_* configuration (say, a real OPP base URL) never reaches the test.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("PAYWARDEN_")));
    env.PAYWARDEN_LOG = "info";
    env.NO_COLOR = "1";
    // The suite opens hundreds of sessions as one entity (the proxy's demo credentials) and
    // closes few of them; paywarden's default allowance is 100 per entity (docs/deploy.md).
    env.PAYWARDEN_HTTP__MAX_SESSIONS_PER_ENTITY = "100000";
    env.PAYWARDEN_HTTP__MAX_SESSIONS = "100000";
    const stderr = fs.openSync(path.join(dataDir, "paywarden.stderr.log"), "w");
    const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir], {
        cwd: dataDir,
        env,
        stdio: ["ignore", "pipe", stderr],
    });
    let stdout = "";
    const baseUrl = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no banner within 90 s:\n${stdout}`)), 90_000);
        child.stdout.on("data", (d) => {
            stdout += d;
            const m = stdout.match(/^paywarden \S+ listening on (http:\/\/127\.0\.0\.1:\d+)\s*$/m);
            if (m) {
                clearTimeout(timer);
                resolve(m[1]);
            }
        });
        child.on("exit", (code) => reject(new Error(`paywarden serve exited (${code}) before its banner:\n${stdout}`)));
    });
    child.stdout.resume();
    for (let i = 0; ; i++) {
        try {
            const r = await fetch(`${baseUrl}/healthz`);
            if (r.ok) break;
        } catch {
            /* not yet */
        }
        if (i > 200) throw new Error("/healthz never answered 200");
        await new Promise((r) => setTimeout(r, 100));
    }
    return {
        baseUrl,
        stop: () =>
            new Promise((resolve) => {
                if (child.exitCode !== null) return resolve();
                child.once("exit", () => resolve());
                child.kill("SIGINT");
                setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
            }),
    };
}

// --- results ---------------------------------------------------------------------------------

/** scenario name -> checks, from the suite's output directory (one folder per scenario). */
function readResults(outDir) {
    const results = new Map();
    for (const dir of fs.readdirSync(outDir)) {
        const m = dir.match(/^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/);
        const file = path.join(outDir, dir, "checks.json");
        if (!m || !fs.existsSync(file)) continue;
        results.set(m[1], JSON.parse(fs.readFileSync(file, "utf8")));
    }
    return results;
}

/**
 * expected-failures.yaml: { era: { scenario: "reason" | { checkId: "reason" } } }.
 * Every reason must say which fixture (tool `test_*`, resource `test://...`, prompt) of the
 * suite's reference server the scenario needs: that is the only acceptable reason.
 */
function loadExpected(file) {
    const doc = parseYaml(fs.readFileSync(file, "utf8")) ?? {};
    const problems = [];
    const fixture = /\b(test_\w+|test:\/\/\S+|json_schema_2020_12_tool)/;
    for (const [era, scenarios] of Object.entries(doc)) {
        if (!ERAS.includes(era)) problems.push(`unknown era ${era}`);
        for (const [scenario, entry] of Object.entries(scenarios ?? {})) {
            const reasons = typeof entry === "string" ? { "": entry } : entry ?? {};
            for (const [check, reason] of Object.entries(reasons)) {
                if (typeof reason !== "string" || !/fixture/i.test(reason) || !fixture.test(reason)) {
                    problems.push(`${era} ${scenario}${check ? `:${check}` : ""}: the reason must name the suite fixture it needs (got ${JSON.stringify(reason)})`);
                }
            }
        }
    }
    if (problems.length) {
        console.error(`run.mjs: ${file} is invalid:\n  ${problems.join("\n  ")}`);
        process.exit(1);
    }
    return doc;
}

/** Classifies one suite run against the expectations of its era. */
function judge(results, scored, expected) {
    const rows = [];
    for (const [scenario, checks] of [...results].sort(([a], [b]) => a.localeCompare(b))) {
        const failing = checks.filter((c) => c.status === "FAILURE");
        const warnings = checks.filter((c) => c.status === "WARNING");
        const isScored = !scored || scored.has(scenario);
        const entry = expected?.[scenario];
        let verdict;
        const notes = [];
        if (!isScored) {
            verdict = failing.length ? "unscored-fail" : "unscored-pass";
        } else if (entry === undefined) {
            verdict = failing.length ? "FAIL" : "pass";
        } else if (typeof entry === "string") {
            verdict = failing.length ? "expected" : "STALE";
            if (!failing.length) notes.push(`listed as an expected failure but passes now: remove it (${entry})`);
        } else {
            const unexpected = failing.filter((c) => !(c.id in entry));
            const stale = Object.keys(entry).filter((id) => checks.find((c) => c.id === id)?.status === "SUCCESS");
            if (unexpected.length) verdict = "FAIL";
            else if (stale.length) verdict = "STALE";
            else verdict = failing.length ? "expected" : "pass";
            for (const id of stale) notes.push(`check ${id} is listed as an expected failure but passes now: remove it`);
        }
        for (const c of failing) {
            const listed = typeof entry === "string" || (entry && c.id in entry);
            if (!listed || !isScored) notes.push(`FAILURE ${c.id}: ${(c.errorMessage ?? "").slice(0, 300)}`);
        }
        for (const c of warnings) notes.push(`WARNING ${c.id}: ${(c.errorMessage ?? "").slice(0, 300)}`);
        rows.push({ scenario, verdict, checks: checks.length, failing: failing.map((c) => c.id), notes });
    }
    if (scored) {
        for (const scenario of scored) {
            if (!results.has(scenario)) rows.push({ scenario, verdict: "FAIL", checks: 0, failing: [], notes: ["required scenario did not run"] });
        }
    }
    for (const scenario of Object.keys(expected ?? {})) {
        if (!results.has(scenario)) rows.push({ scenario, verdict: "STALE", checks: 0, failing: [], notes: ["listed in expected-failures.yaml but the suite no longer runs it"] });
    }
    return rows;
}

// --- main ------------------------------------------------------------------------------------

async function main() {
    const [major] = process.versions.node.split(".").map(Number);
    if (major < 22) {
        console.error(`run.mjs: the conformance suite needs Node.js >= 22 (this is ${process.version}); scripts/setup-node.sh installs it`);
        process.exit(1);
    }
    const opts = parseArgs(process.argv.slice(2));
    const expected = loadExpected(path.join(HERE, "expected-failures.yaml"));
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "paywarden-conformance-"));
    const resultsDir = path.join(HERE, "results");
    fs.rmSync(resultsDir, { recursive: true, force: true });
    fs.mkdirSync(resultsDir, { recursive: true });

    const dataDir = path.join(work, "data");
    fs.mkdirSync(dataDir, { recursive: true });
    const server = await startPaywarden(opts.bin, dataDir);
    const proxy = await startHeaderProxy(server.baseUrl, DEMO_HEADERS);
    const summary = [];
    let failed = false;
    try {
        console.log(`paywarden at ${server.baseUrl}; the suite reaches it through the credential proxy on 127.0.0.1:${proxy.port}`);
        for (const { era, pkg, args, scored: scoredOf } of RUNS.filter((r) => opts.eras.includes(r.era))) {
            const cli = cliPath(pkg);
            const version = JSON.parse(fs.readFileSync(path.join(HERE, "node_modules", pkg, "package.json"), "utf8")).version;
            const scored = scoredOf ? await scoredOf(cli) : null;
            for (const endpoint of opts.endpoints) {
                const url = `http://127.0.0.1:${proxy.port}${endpoint}`;
                const tag = `${era} ${endpoint}`;
                const slug = `${era}_suite-${version}${endpoint.replace(/\W+/g, "_")}`;
                const outDir = path.join(work, slug);
                const started = Date.now();
                const { code, signal, out } = await run(process.execPath, [cli, ...args(url), "-o", outDir]);
                const logFile = path.join(resultsDir, `${slug}.log`);
                fs.writeFileSync(logFile, out);
                const results = fs.existsSync(outDir) ? readResults(outDir) : new Map();
                if (signal || results.size === 0) {
                    console.log(`\n✗ ${tag}: the suite (@modelcontextprotocol/conformance@${version}) produced no results (exit ${code ?? signal}); log: ${logFile}\n${out.slice(-3000)}`);
                    failed = true;
                    summary.push({ era, endpoint, version, passed: 0, expected: 0, failed: 1, stale: 0, unscored: 0 });
                    continue;
                }
                const rows = judge(results, scored, expected[era]);
                const count = (v) => rows.filter((r) => r.verdict === v).length;
                const s = {
                    era,
                    endpoint,
                    version,
                    passed: count("pass"),
                    expected: count("expected"),
                    failed: count("FAIL"),
                    stale: count("STALE"),
                    unscored: count("unscored-pass") + count("unscored-fail"),
                    unscoredFailing: rows.filter((r) => r.verdict === "unscored-fail").map((r) => r.scenario),
                    seconds: Math.round((Date.now() - started) / 100) / 10,
                };
                summary.push(s);
                fs.writeFileSync(path.join(resultsDir, `${slug}.json`), JSON.stringify(rows, null, 2));
                console.log(`\n== ${tag} (@modelcontextprotocol/conformance@${version}, ${s.seconds} s)`);
                for (const r of rows) {
                    const mark = { pass: "✓", expected: "~", FAIL: "✗", STALE: "!", "unscored-pass": "·", "unscored-fail": "·" }[r.verdict];
                    const label = { expected: " (expected failure: fixture)", STALE: " (STALE expected failure)", "unscored-pass": " (not scored: passes)", "unscored-fail": " (not scored: fails)" }[r.verdict] ?? "";
                    console.log(`  ${mark} ${r.scenario}${label}`);
                    if (r.verdict === "FAIL" || r.verdict === "STALE" || (r.notes.length && r.verdict !== "unscored-fail" && r.verdict !== "unscored-pass")) {
                        for (const n of r.notes) console.log(`      ${n}`);
                    }
                }
                if (s.failed || s.stale) failed = true;
            }
        }
    } finally {
        await proxy.close();
        await server.stop();
    }

    fs.writeFileSync(path.join(resultsDir, "summary.json"), JSON.stringify(summary, null, 2));
    console.log("\nMCP conformance (scored scenarios; expected failures are fixture scenarios only):");
    console.log("  era         endpoint            suite             passed  expected  FAILED  STALE  (not scored)");
    for (const s of summary) {
        console.log(
            `  ${s.era}  ${s.endpoint.padEnd(18)}  ${s.version.padEnd(16)}  ${String(s.passed).padStart(6)}  ${String(s.expected).padStart(8)}  ${String(s.failed).padStart(6)}  ${String(s.stale).padStart(5)}  (${s.unscored}${s.unscoredFailing?.length ? `: failing ${s.unscoredFailing.join(", ")}` : ""})`,
        );
    }
    const passed = summary.reduce((n, s) => n + s.passed, 0);
    const xfail = summary.reduce((n, s) => n + s.expected, 0);
    const bad = summary.reduce((n, s) => n + s.failed + s.stale, 0);
    console.log(`\n(skipped: the ${xfail} expected failures, fixture scenarios, counted over eras and endpoints)`);
    console.log(`conformance: ${passed} passed, ${bad} failed, ${xfail} skipped`);
    if (!failed) fs.rmSync(work, { recursive: true, force: true });
    else console.log(`(suite output kept in ${work}; logs in ${resultsDir})`);
    process.exit(failed ? 1 : 0);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
