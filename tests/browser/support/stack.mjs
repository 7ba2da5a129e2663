// A Warren stack for one browser test: one dispatcher and N gateways as child
// processes of the already-built debug binaries, under a prefix of their own
// (`wb-<hex>`) on the machine's shared RabbitMQ and Redis. `stop()` kills them and
// removes every queue, exchange and key under the prefix; every wait is bounded.

import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync, closeSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const ROOT = resolve(import.meta.dirname, '..', '..', '..');
export const LOGS = join(ROOT, 'target', 'test-logs');
const BIN = join(ROOT, 'target', 'debug');
const SHARDS = 4;
const MANAGEMENT = 'http://127.0.0.1:15672/api';
const MANAGEMENT_AUTH = `Basic ${Buffer.from('guest:guest').toString('base64')}`;

/** Polls `probe` until it returns a truthy value, at most `ms`; throws with `what`. */
export async function waitFor(what, probe, { ms = 20_000, every = 100 } = {}) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
}

async function freePort() {
  const server = createServer();
  await new Promise((ok, fail) => server.listen(0, '127.0.0.1', ok).on('error', fail));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

/** Every child started here, so none outlives the test run, however it ends. */
const children = new Set();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** A child process with its output appended to a log file. */
class Service {
  constructor(name, binary, env, log) {
    this.name = name;
    this.binary = binary;
    this.env = env;
    this.log = log;
    this.child = null;
  }

  start() {
    const fd = openSync(this.log, 'a');
    try {
      this.child = spawn(this.binary, [], {
        env: { ...process.env, ...this.env },
        stdio: ['ignore', fd, fd],
      });
    } finally {
      closeSync(fd);
    }
    const child = this.child;
    children.add(child);
    this.exited = new Promise((ok) =>
      child.once('exit', (code, signal) => {
        children.delete(child);
        ok({ code, signal });
      }),
    );
    child.once('error', (e) => console.error(`[${this.name}] ${e.message}`));
  }

  get running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. Resolves on exit. */
  async stop(graceMs = 20_000) {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = new Promise((ok) => setTimeout(ok, graceMs, 'timeout'));
    if ((await Promise.race([this.exited, timer])) === 'timeout') {
      console.error(`[${this.name}] did not stop within ${graceMs} ms: SIGKILL`);
      this.child.kill('SIGKILL');
      await Promise.race([this.exited, sleep(5_000)]);
    }
  }
}

export class Stack {
  /**
   * Starts a dispatcher and `gateways` gateways and waits until all are ready. `env`
   * adds settings (`WARREN__SECTION__KEY`) for every process.
   */
  static async start({ gateways = 2, env = {} } = {}) {
    for (const bin of ['warren-gateway', 'warren-dispatcher']) {
      if (!existsSync(join(BIN, bin))) {
        throw new Error(`${join(BIN, bin)} is missing: run cargo build --workspace --bins first`);
      }
    }
    mkdirSync(LOGS, { recursive: true });
    const stack = new Stack(`wb-${randomBytes(4).toString('hex')}`);
    const ports = [];
    for (let i = 0; i < gateways; i += 1) ports.push(await freePort());
    stack.ports = ports;
    // Each gateway's operations listener (/readyz, /metrics, /stats).
    stack.opsPorts = [];
    for (let i = 0; i < gateways; i += 1) stack.opsPorts.push(await freePort());
    stack.env = {
      WARREN__AMQP__PREFIX: stack.prefix,
      WARREN__REDIS__PREFIX: stack.prefix,
      WARREN__AUTH__SECRET: randomBytes(24).toString('hex'),
      WARREN__GATEWAY__DEV_TOKENS: 'true',
      WARREN__GATEWAY__ALLOWED_ORIGINS: ports.map((p) => `http://127.0.0.1:${p}`).join(','),
      WARREN__DISPATCHER__LISTEN: '127.0.0.1:0',
      ...env,
    };
    console.log(`[${stack.prefix}] logs: ${join(LOGS, `${stack.prefix}-*.log`)}`);
    try {
      const dispatcher = stack.#service('dispatcher', 'warren-dispatcher', {});
      dispatcher.start();
      ports.forEach((port, i) => {
        stack.#service(`gw${i}`, 'warren-gateway', {
          WARREN__GATEWAY__LISTEN: `127.0.0.1:${port}`,
          WARREN__GATEWAY__OPS_LISTEN: `127.0.0.1:${stack.opsPorts[i]}`,
          WARREN__GATEWAY__ID: `${stack.prefix}-gw${i}`,
        }).start();
      });
      await Promise.all(ports.map((_, i) => stack.waitReady(i)));
      await stack.#waitConsumers();
    } catch (e) {
      await stack.stop();
      throw e;
    }
    return stack;
  }

  constructor(prefix) {
    this.prefix = prefix;
    this.services = new Map();
  }

  #service(name, binary, env) {
    const service = new Service(name, join(BIN, binary), { ...this.env, ...env }, join(LOGS, `${this.prefix}-${name}.log`));
    this.services.set(name, service);
    return service;
  }

  url(i) {
    return `http://127.0.0.1:${this.ports[i]}`;
  }

  gateway(i) {
    return this.services.get(`gw${i}`);
  }

  /** Waits for gateway i's `/readyz` to answer 200. */
  async waitReady(i, ms = 30_000) {
    const gw = this.gateway(i);
    await waitFor(`gw${i} /readyz (log: ${gw.log})`, async () => {
      if (!gw.running) throw new Error(`gw${i} exited: see ${gw.log}`);
      const response = await fetch(`http://127.0.0.1:${this.opsPorts[i]}/readyz`, { signal: AbortSignal.timeout(2_000) });
      return response.status === 200;
    }, { ms, every: 200 });
  }

  /** SIGTERM to gateway i; resolves when it has exited. */
  stopGateway(i) {
    return this.gateway(i).stop();
  }

  /** Starts gateway i again (same port, same settings) and waits until it is ready. */
  async restartGateway(i) {
    this.gateway(i).start();
    await this.waitReady(i);
  }

  /** Until every `<p>.commands.<n>` has a consumer: the dispatcher is taking commands. */
  async #waitConsumers() {
    const wanted = Array.from({ length: SHARDS }, (_, n) => `${this.prefix}.commands.${n}`);
    const dispatcher = this.services.get('dispatcher');
    await waitFor(`the dispatcher to consume ${wanted.join(', ')} (log: ${dispatcher.log})`, async () => {
      if (!dispatcher.running) throw new Error(`the dispatcher exited: see ${dispatcher.log}`);
      const { stdout } = await run('rabbitmqctl', ['list_consumers', '-q', 'queue_name'], { timeout: 10_000 });
      const consumed = new Set(stdout.split('\n').map((line) => line.trim()));
      return wanted.every((q) => consumed.has(q));
    }, { ms: 30_000, every: 250 });
  }

  /** Kills every process, then removes the prefix's queues, exchanges and Redis keys. */
  async stop() {
    await Promise.all([...this.services.values()].map((s) => s.stop(15_000)));
    const problems = [];
    await this.#removeBrokerObjects(problems);
    await this.#removeRedisKeys(problems);
    if (problems.length) console.error(`[${this.prefix}] cleanup problems:\n  ${problems.join('\n  ')}`);
  }

  async #removeBrokerObjects(problems) {
    const p = this.prefix;
    const queues = new Set([
      ...Array.from({ length: SHARDS }, (_, n) => `${p}.commands.${n}`),
      `${p}.dead`,
      ...[...this.services.keys()].filter((n) => n.startsWith('gw')).map((n) => `${p}.gw.${p}-${n}`),
    ]);
    const exchanges = new Set([`${p}.commands`, `${p}.events`, `${p}.dead`]);
    // Anything else the services declared under the prefix goes too.
    try {
      for (const q of await management('GET', '/queues/%2F?columns=name')) if (q.name.startsWith(`${p}.`)) queues.add(q.name);
      for (const x of await management('GET', '/exchanges/%2F?columns=name')) if (x.name.startsWith(`${p}.`)) exchanges.add(x.name);
    } catch (e) {
      problems.push(`listing under ${p}: ${e.message}`);
    }
    for (const q of queues) {
      await run('rabbitmqctl', ['delete_queue', '-q', q], { timeout: 15_000 }).catch((e) => {
        // Already gone (an expired gateway queue) is fine.
        if (!/not[_ ]found/i.test(`${e.stdout}${e.stderr}`)) problems.push(`delete queue ${q}: ${e.message.split('\n')[0]}`);
      });
    }
    for (const x of exchanges) {
      await management('DELETE', `/exchanges/%2F/${encodeURIComponent(x)}`).catch((e) => {
        if (!/404/.test(e.message)) problems.push(`delete exchange ${x}: ${e.message}`);
      });
    }
  }

  async #removeRedisKeys(problems) {
    try {
      const { stdout } = await run('redis-cli', ['--scan', '--pattern', `${this.prefix}:*`], { timeout: 15_000 });
      const keys = stdout.split('\n').filter(Boolean);
      for (let i = 0; i < keys.length; i += 200) {
        await run('redis-cli', ['DEL', ...keys.slice(i, i + 200)], { timeout: 15_000 });
      }
    } catch (e) {
      problems.push(`redis keys ${this.prefix}:*: ${e.message.split('\n')[0]}`);
    }
  }
}

/** One call to RabbitMQ's management API (guest on 127.0.0.1). */
async function management(method, path) {
  const response = await fetch(`${MANAGEMENT}${path}`, {
    method,
    headers: { authorization: MANAGEMENT_AUTH },
    signal: AbortSignal.timeout(10_000),
  });
  if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status}`);
  return method === 'GET' ? response.json() : null;
}
