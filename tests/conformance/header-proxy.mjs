// A transparent HTTP reverse proxy that adds paywarden's credential headers to every request.
//
// The MCP conformance suite has no way to send custom headers, and every paywarden MCP request
// must carry `X-Entity-Id` and `X-Token` (the caller's OPP credentials). This proxy sits between
// the suite and `paywarden serve` and adds exactly those two headers, unless the request already
// has them. Everything else goes through untouched, in both directions and streamed: method,
// path, `Host` and `Origin` (so the suite's DNS-rebinding checks reach paywarden's own Host and
// Origin validation), status, response headers and SSE bodies.

import http from "node:http";

/**
 * Starts the proxy on 127.0.0.1 (ephemeral port) in front of `target` (an http:// origin).
 * Resolves to { port, close() }.
 */
export function startHeaderProxy(target, headers) {
    const upstream = new URL(target);
    const agent = new http.Agent({ keepAlive: true });
    const server = http.createServer((req, res) => {
        const outHeaders = { ...req.headers };
        for (const [name, value] of Object.entries(headers)) {
            if (outHeaders[name.toLowerCase()] === undefined) outHeaders[name.toLowerCase()] = value;
        }
        const proxied = http.request(
            {
                host: upstream.hostname,
                port: upstream.port,
                method: req.method,
                path: req.url,
                headers: outHeaders, // includes the client's own Host header, unchanged
                agent,
            },
            (upstreamRes) => {
                res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.rawHeaders);
                res.flushHeaders();
                upstreamRes.pipe(res);
            },
        );
        proxied.on("error", (err) => {
            if (!res.headersSent) {
                res.writeHead(502, { "content-type": "text/plain" });
            }
            res.end(`header-proxy: upstream error: ${err.message}`);
        });
        res.on("close", () => proxied.destroy());
        req.pipe(proxied);
    });
    return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
            resolve({
                port: server.address().port,
                close: () =>
                    new Promise((done) => {
                        server.closeAllConnections?.();
                        agent.destroy();
                        server.close(() => done());
                    }),
            });
        });
    });
}
