// @platforma/oplog-client: platforma's worker client for Node.
//
//   OpLogClient                the OpLog SDK (the Go SDK's guarantees)
//   createProfileClient,       typed clients of ProfileService and
//   createReviewMetadataClient ReviewMetadataService with deadlines and
//                              retries of idempotent calls
//   connect                    a gRPC transport with TLS, a client
//                              certificate or a bearer token
//
// Generated messages and enums: "@platforma/oplog-client/gen/platforma/<service>/v1/<file>_pb".

export { OpLogClient, OpLogError, errorType } from "./client.js";
export type { Entry, Rejected, Stats, FlushResult, CloseResult, OpLogClientOptions } from "./client.js";
export { connect } from "./transport.js";
export type { ConnectOptions, Connection } from "./transport.js";
export { createProfileClient, createReviewMetadataClient } from "./services.js";
export type { CallPolicy, ProfileClient, ReviewMetadataClient } from "./services.js";
export { Keys, PLACEHOLDER, defaultKeys, defaultKeySet, normalize } from "./redact.js";
export { Identifier, Code, Message, UserAgent, freeText, sanitize, sanitizeBytes, problem, problemBytes } from "./sanitize.js";
export type { Kind } from "./sanitize.js";
export { OperationType } from "./gen/platforma/oplog/v1/oplog_service_pb.js";
export { Outcome, AuthType } from "./gen/platforma/common/v1/common_pb.js";
