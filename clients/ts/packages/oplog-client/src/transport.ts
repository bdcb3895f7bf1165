// Connections to platforma's services: gRPC over HTTP/2 (TLS) with
// @connectrpc/connect-node, so the grpc-go servers need nothing else. The
// options match the Go SDK's credentials.go: a CA that verifies the
// server, a worker's client certificate (its URI SAN
// spiffe://platforma/worker/<name> is its identity), or a bearer token
// (operators' tools; sent only over TLS).

import { readFileSync } from "node:fs";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

export interface ConnectOptions {
  /** The service: "host:port" (TLS), or a URL ("https://host:port", "http://host:port" for a server run with -insecure). */
  address: string;
  /** PEM of the CA that verifies the server (default: Node's roots). */
  ca?: string | Buffer;
  caFile?: string;
  /** The worker's client certificate and key, PEM (both or neither). */
  cert?: string | Buffer;
  key?: string | Buffer;
  certFile?: string;
  keyFile?: string;
  /** A bearer token (a JWT), sent as "authorization: Bearer <token>" with every call; refused without TLS. */
  token?: string;
  /** Interceptors added to every call. */
  interceptors?: Interceptor[];
}

/** A transport and what closes it. */
export interface Connection {
  transport: Transport;
  /** Closes the HTTP/2 session: calls in flight fail, and the process may exit. */
  close(): void;
}

/** Opens a gRPC transport to a platforma service (lazily: nothing is dialled until the first call). */
export function connect(opts: ConnectOptions): Connection {
  const url = opts.address.includes("://") ? opts.address : `https://${opts.address}`;
  const secure = url.startsWith("https:");
  const read = (v: string | Buffer | undefined, file: string | undefined): string | Buffer | undefined =>
    v ?? (file ? readFileSync(file) : undefined);
  const ca = read(opts.ca, opts.caFile);
  const cert = read(opts.cert, opts.certFile);
  const key = read(opts.key, opts.keyFile);
  if ((cert === undefined) !== (key === undefined)) {
    throw new Error("oplog-client: a client certificate needs both cert and key");
  }
  if (!secure && (opts.token !== undefined || cert !== undefined)) {
    throw new Error("oplog-client: a token or a client certificate needs TLS (an https:// address)");
  }
  const interceptors: Interceptor[] = [...(opts.interceptors ?? [])];
  if (opts.token !== undefined) {
    const value = `Bearer ${opts.token}`;
    interceptors.push((next) => (req) => {
      req.header.set("authorization", value);
      return next(req);
    });
  }
  const tls = secure ? { ...(ca && { ca }), ...(cert && { cert }), ...(key && { key }) } : {};
  // Pings keep a connection through a quiet spell and notice a dead one
  // (a server killed with -9 sends no FIN).
  const sessionManager = new Http2SessionManager(url, { pingIntervalMs: 10_000, pingTimeoutMs: 5_000, idleConnectionTimeoutMs: 60_000 }, tls);
  const transport = createGrpcTransport({ baseUrl: url, sessionManager, interceptors });
  return { transport, close: () => sessionManager.abort() };
}
