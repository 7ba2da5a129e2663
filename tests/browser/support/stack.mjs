// A Warren stack for one browser test, started by the project's one launcher,
// `target/debug/warren-stack`: one dispatcher and N gateways under a prefix of their
// own (`wb-<hex>`) on the machine's shared RabbitMQ and Redis. The launcher prints one
// JSON line once all are ready, then takes commands on stdin (`stop-gateway I`,
// `restart-gateway I`, each answered with a JSON line); `stop()` ends its stdin, and it
// stops the processes and removes every queue, exchange and key under the prefix.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

export const ROOT = resolve(import.meta.dirname, '..', '..', '..');
export const LOGS = join(ROOT, 'target', 'test-logs');
const LAUNCHER = join(ROOT, 'target', 'debug', 'warren-stack');
/** Starting (services, readiness) and each command are bounded by this. */
const WAIT_MS = 60_000;

/** Every launcher started here, so none outlives the test run, however it ends. */
const launchers = new Set();
process.once('exit', () => {
  for (const child of launchers) child.kill('SIGTERM');
});

/** A promise that rejects after `ms` with `what`. */
function deadline(ms, what) {
  return sleep(ms).then(() => {
    throw new Error(`timed out after ${ms} ms waiting for ${what}`);
  });
}

export class Stack {
  /**
   * Starts a dispatcher and `gateways` gateways and waits until all are ready. `env`
   * adds settings (`WARREN__SECTION__KEY`) for every process; `secret` is the HS256
   * secret the services verify tokens with (a random one when not given), for a test
   * that mints its own tokens; `tag` starts the prefix.
   */
  static async start({ gateways = 2, env = {}, secret, tag = 'wb' } = {}) {
    if (!existsSync(LAUNCHER)) {
      throw new Error(`${LAUNCHER} is missing: run cargo build --workspace --bins first`);
    }
    mkdirSync(LOGS, { recursive: true });
    const settings = { WARREN__GATEWAY__DEV_TOKENS: 'true', ...env };
    const args = ['--gateways', String(gateways), '--dispatchers', '1', '--prefix-tag', tag];
    args.push('--allow-own-origins', '--logs', LOGS, '--control');
    if (secret) args.push('--secret', secret);
    for (const [key, value] of Object.entries(settings)) args.push('--env', `${key}=${value}`);
    // The launcher finds the services through the checkout it was built in; a target/
    // copied from another checkout would run that checkout's services, so say which.
    const processEnv = { CARGO_TARGET_DIR: join(ROOT, 'target'), ...process.env };
    const child = spawn(LAUNCHER, args, { stdio: ['pipe', 'pipe', 'inherit'], env: processEnv });
    launchers.add(child);
    const stack = new Stack(child);
    const description = await Promise.race([stack.#next(), deadline(WAIT_MS, 'warren-stack to start the stack')]).catch(
      async (e) => {
        await stack.stop();
        throw e;
      },
    );
    stack.prefix = description.prefix;
    stack.gateways = description.gateways;
    return stack;
  }

  constructor(child) {
    this.child = child;
    this.exited = new Promise((ok) =>
      child.once('exit', (code, signal) => {
        launchers.delete(child);
        ok({ code, signal });
      }),
    );
    this.lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }

  /** The launcher's next JSON line; throws if it ended first or reports an error. */
  async #next() {
    const { value, done } = await this.lines.next();
    if (done) {
      const { code, signal } = await this.exited;
      throw new Error(`warren-stack exited (${signal ?? code}); its reasons are above`);
    }
    const answer = JSON.parse(value);
    if (answer.error) throw new Error(`warren-stack: ${answer.error}`);
    return answer;
  }

  /** One command; resolves with the launcher's answer. */
  async #command(line) {
    this.child.stdin.write(`${line}\n`);
    return Promise.race([this.#next(), deadline(WAIT_MS, `warren-stack: ${line}`)]);
  }

  url(i) {
    return this.gateways[i].url.replace(/\/$/, '');
  }

  /** Gateway i's WebSocket endpoint, `ws://host:port/ws`. */
  wsUrl(i) {
    return `${this.url(i).replace(/^http/, 'ws')}/ws`;
  }

  /** SIGTERM to gateway i; resolves when it has exited. */
  stopGateway(i) {
    return this.#command(`stop-gateway ${i}`);
  }

  /** Starts gateway i again (same port, same settings) and waits until it is ready. */
  restartGateway(i) {
    return this.#command(`restart-gateway ${i}`);
  }

  /** Stops every process, then removes the prefix's queues, exchanges and Redis keys. */
  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.stdin.end();
      const timer = sleep(WAIT_MS).then(() => 'timeout');
      if ((await Promise.race([this.exited, timer])) === 'timeout') {
        console.error(`warren-stack did not stop within ${WAIT_MS} ms: SIGKILL`);
        this.child.kill('SIGKILL');
      }
    }
  }
}
