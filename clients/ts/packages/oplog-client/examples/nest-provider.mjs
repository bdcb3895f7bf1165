// The logging buffer of a NestJS worker, as a provider: one OpLogClient
// per process, closed (and so flushed) when Nest shuts the module down.
// No Nest dependency is needed for the class itself; in a Nest module:
//
//   @Module({ providers: [OpLogProvider], exports: [OpLogProvider] })
//   export class OpLogModule {}
//
// and app.enableShutdownHooks() in main.ts, so SIGTERM reaches
// onModuleDestroy. What a crash can lose is what the buffer held (at most
// the linger, 200 ms, plus a flush in flight); a clean shutdown loses
// nothing the server can take within the timeout, and says what it could
// not deliver.

import { OpLogClient } from "@platforma/oplog-client";

export class OpLogProvider {
  constructor(options = {}) {
    this.client = new OpLogClient({
      connect: {
        address: process.env.OPLOG_ADDR ?? "localhost:50053",
        caFile: process.env.PLATFORMA_CA,
        certFile: process.env.PLATFORMA_WORKER_CERT,
        keyFile: process.env.PLATFORMA_WORKER_KEY,
      },
      ...options,
    });
  }

  /** log() never blocks and never throws: call it from any handler. */
  log(entry) {
    this.client.log(entry);
  }

  /** Times fn and logs its outcome; returns its result, rethrows its error. */
  track(entry, fn) {
    return this.client.track(entry, fn);
  }

  stats() {
    return this.client.stats();
  }

  // Nest calls this on app.close() and on SIGTERM with shutdown hooks.
  async onModuleDestroy() {
    const result = await this.client.close(Number(process.env.OPLOG_CLOSE_TIMEOUT_MS ?? 10_000));
    if (!result.ok) {
      console.error(`oplog: ${result.failed} entries not delivered, ${result.dropped} dropped`, result.stats);
    }
  }
}
