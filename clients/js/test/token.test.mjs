// The token refresh timing alone (src/token.ts): when to ask getToken for the next token,
// from the JWT's exp/iat and the hub's time, without a clock or a hub.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { importSource } from './source.mjs';

const { refreshDelay, expired } = await importSource('src/token.ts');
const jwt = (claims) => `h.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.s`;
const NOW = 1_760_000_000_000;
const s = NOW / 1000;

test('refresh at 80% of the remaining life, measured on the hub clock, capped by exp - iat', () => {
  assert.equal(refreshDelay(jwt({ iat: s, exp: s + 3600 }), NOW), 0.8 * 3600e3);
  assert.equal(refreshDelay(jwt({ iat: s - 1800, exp: s + 1800 }), NOW), 0.8 * 1800e3);
  // The client clock 2 h ahead (so "now" is past exp): the token's own life wins.
  assert.equal(refreshDelay(jwt({ iat: s - 7200, exp: s - 3600 }), NOW), 0.8 * 3600e3);
  // Never past setTimeout's limit (a 60-day token), never sooner than the floor.
  assert.equal(refreshDelay(jwt({ iat: s, exp: s + 60 * 86400 }), NOW), 2 ** 31 - 1);
  assert.equal(refreshDelay(jwt({ iat: s, exp: s + 3 }), NOW), 2400);
  assert.equal(refreshDelay(jwt({ iat: s, exp: s + 1 }), NOW), 1000, 'no hot loop');
  assert.equal(refreshDelay(jwt({ iat: s, exp: s + 60 }), NOW), 48000);
  assert.equal(refreshDelay(jwt({ sub: 'x' }), NOW), undefined, 'no exp: nothing to refresh');
  assert.equal(refreshDelay('not a jwt', NOW), undefined);
  assert.equal(refreshDelay(undefined, NOW), undefined);
});

test('expired: only a token whose exp has passed', () => {
  assert.equal(expired(jwt({ exp: s - 1 }), NOW), true);
  assert.equal(expired(jwt({ exp: s }), NOW), true);
  assert.equal(expired(jwt({ exp: s + 1 }), NOW), false);
  assert.equal(expired(jwt({}), NOW), false);
  assert.equal(expired(undefined, NOW), false);
});
