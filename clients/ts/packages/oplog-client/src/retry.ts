// google.rpc.RetryInfo in an error's details (grpc-status-details-bin):
// the server's word on when to retry, which outranks the backoff. Decoded
// by hand, so the package needs no googleapis protos:
//
//	message RetryInfo { google.protobuf.Duration retry_delay = 1; }
//	message Duration  { int64 seconds = 1; int32 nanos = 2; }

import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { ConnectError } from "@connectrpc/connect";

const retryInfoType = "google.rpc.RetryInfo";

/** The RetryInfo delay of err in milliseconds, or undefined when the server sent none. */
export function retryDelayMs(err: ConnectError): number | undefined {
  for (const d of err.details) {
    if (!("type" in d) || d.type !== retryInfoType || !(d.value instanceof Uint8Array)) continue;
    try {
      return decodeRetryInfo(d.value);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function decodeRetryInfo(b: Uint8Array): number | undefined {
  const r = new BinaryReader(b);
  let ms: number | undefined;
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === WireType.LengthDelimited) {
      const d = new BinaryReader(r.bytes());
      let seconds = 0;
      let nanos = 0;
      while (d.pos < d.len) {
        const [f, w] = d.tag();
        if (f === 1 && w === WireType.Varint) seconds = Number(d.int64());
        else if (f === 2 && w === WireType.Varint) nanos = d.int32();
        else d.skip(w);
      }
      ms = seconds * 1000 + nanos / 1e6;
    } else {
      r.skip(wt);
    }
  }
  return ms;
}
