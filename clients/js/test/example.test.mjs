// The example of docs/CLIENTS.md, run as written (only its import points at this
// checkout's warren.js) against a stack of its own: the documentation cannot drift
// from what works.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

import { Stack, STACK_OPTIONS, waitFor } from './support.mjs';

const DOC = resolve(import.meta.dirname, '..', '..', '..', 'docs', 'CLIENTS.md');
const LIBRARY = pathToFileURL(resolve(import.meta.dirname, '..', 'warren.js')).href;

/** The first js block after the "### Example" heading. */
function example() {
  const doc = readFileSync(DOC, 'utf8');
  const section = doc.slice(doc.indexOf('### Example'));
  const block = /```js\n([\s\S]*?)```/.exec(section);
  assert.ok(block, 'docs/CLIENTS.md has an example');
  return block[1];
}

test('the example in docs/CLIENTS.md runs: it joins, sends, is acknowledged and sees its message', { timeout: 120_000 }, async () => {
  const code = example();
  assert.ok(code.split('\n').length <= 30, 'the example stays short');
  assert.match(code, /from '@warren\/client'/);
  const dir = mkdtempSync(join(tmpdir(), 'warren-example-'));
  const stack = await Stack.start({ ...STACK_OPTIONS, gateways: 1 });
  try {
    const file = join(dir, 'example.mjs');
    writeFileSync(file, code.replace("'@warren/client'", `'${LIBRARY}'`));
    const major = Number(process.versions.node.split('.')[0]);
    const flags = major < 22 ? ['--experimental-websocket'] : [];
    // It runs until stopped, as the page says: read what it printed, then stop it.
    const child = spawn(process.execPath, [...flags, file], {
      env: { ...process.env, WARREN_GATEWAY: stack.url(0) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    try {
      await waitFor('the example to print its own message', () => /hello from Node$/m.test(stdout), 30_000);
    } finally {
      child.kill('SIGTERM');
    }
    assert.match(stdout, /^connection: open/m);
    assert.match(stdout, /^stored as seq 1$/m);
    assert.match(stdout, /^#lobby 1 <Example Bot> hello from Node$/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await stack.stop();
  }
});
