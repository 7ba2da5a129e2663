// warren.d.ts against warren.js: everything the typings promise exists in the module,
// and everything the module exports is typed. (No TypeScript compiler needed.)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

import * as warren from '../warren.js';

const TYPES = readFileSync(resolve(import.meta.dirname, '..', 'warren.d.ts'), 'utf8');

/** The body of `export declare class NAME { ... }` (its members are one a line). */
function classBody(name) {
  const start = TYPES.indexOf(`export declare class ${name}`);
  assert.ok(start >= 0, `${name} is declared`);
  return TYPES.slice(start, TYPES.indexOf('\n}', start));
}

test('the declared exports and the module\'s exports are the same names', () => {
  const declared = [...TYPES.matchAll(/^export declare (?:const|function|class) (\w+)/gm)].map((m) => m[1]);
  assert.deepEqual(declared.sort(), Object.keys(warren).sort());
});

test('every declared method and property of WarrenClient exists', () => {
  const body = classBody('WarrenClient');
  const methods = [...body.matchAll(/^ {2}(\w+)(?:<[^>]*>)?\(/gm)].map((m) => m[1]);
  const properties = [...body.matchAll(/^ {2}readonly (\w+):/gm)].map((m) => m[1]);
  assert.ok(methods.length >= 14 && properties.length >= 7, 'the pattern found the members');
  const client = new warren.WarrenClient({ url: 'ws://127.0.0.1:9/ws', WebSocket: class {} });
  for (const name of methods) assert.equal(typeof client[name], 'function', `method ${name}`);
  for (const name of properties) assert.ok(name in client, `property ${name}`);
});

test('every event in the typings\' EventMap is one the client emits', () => {
  const map = TYPES.slice(TYPES.indexOf('export interface EventMap'));
  const events = [...map.slice(0, map.indexOf('\n}')).matchAll(/^ {2}(\w+):/gm)].map((m) => m[1]);
  const source = readFileSync(resolve(import.meta.dirname, '..', 'warren.js'), 'utf8');
  // Frames the client passes on as they are (member, typing, moderation) go out by type.
  const byType = ['member', 'typing', 'moderation'];
  for (const event of events) {
    const emitted = source.includes(`#emit('${event}'`) || byType.includes(event) || source.includes(`case '${event}':`);
    assert.ok(emitted, `${event} is emitted`);
  }
});

// The typings as TypeScript sees them: tsc (clients/js's one dev dependency, installed
// by scripts/test-js-client.sh) checks a program written against them, strictly, and
// refuses every marked misuse.
const TSC = resolve(import.meta.dirname, '..', 'node_modules', 'typescript', 'bin', 'tsc');

function tsc(project) {
  assert.ok(existsSync(TSC), `${TSC} is missing: npm ci in clients/js (scripts/test-js-client.sh does)`);
  return spawnSync(process.execPath, [TSC, '-p', resolve(import.meta.dirname, 'types', project)], {
    encoding: 'utf8',
    timeout: 120_000,
  });
}

test('a program using the documented API type-checks against warren.d.ts (tsc --strict)', () => {
  const run = tsc('tsconfig.json');
  assert.equal(run.status, 0, `tsc: ${run.stdout}${run.stderr}`);
});

test('tsc refuses each misuse in misuse.ts, at its own line', () => {
  const run = tsc('tsconfig.misuse.json');
  assert.notEqual(run.status, 0);
  const lines = [...run.stdout.matchAll(/misuse\.ts\((\d+),\d+\): error TS\d+/g)].map((m) => Number(m[1]));
  const source = readFileSync(resolve(import.meta.dirname, 'types', 'misuse.ts'), 'utf8').split('\n');
  const marked = source.flatMap((line, i) => (/^\/\/ /.test(source[i - 1] ?? '') && i > 4 && line.trim() ? [i + 1] : []));
  assert.deepEqual(lines, marked, `tsc said:\n${run.stdout}`);
});
