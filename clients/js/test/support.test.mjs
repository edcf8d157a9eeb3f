// The tests' own support, which every test's Redis depends on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis } from './support.mjs';

test('a redis-server whose port another server took starts on another port, and the one answering is itself', async () => {
  const other = await startRedis();
  const taken = Number(new URL(other.url).port);
  const redis = await startRedis(taken); // "Address already in use": another port
  assert.notEqual(redis.url, other.url);
  assert.match(await redis.command('INFO', 'server'), new RegExp(`\\r\\nprocess_id:${redis.child.pid}\\r\\n`));
  assert.match(await other.command('INFO', 'server'), new RegExp(`\\r\\nprocess_id:${other.child.pid}\\r\\n`));
});
