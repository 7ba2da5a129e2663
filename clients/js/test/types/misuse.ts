// Code that must NOT type-check against warren.d.ts (typings.test.mjs expects tsc to
// refuse each line marked below): the typings constrain, not just describe.

import { WarrenClient } from '../../warren.js';

const client = new WarrenClient({ url: 'ws://127.0.0.1:8080/ws' });
// An unknown moderation action.
await client.moderate('lobby', 'obliterate');
// A room setting that does not exist.
await client.moderate('lobby', 'configure', { settings: { colour: 'red' } });
// A send without text.
await client.send('lobby');
// An event no client emits.
client.on('explosion', () => {});
