-- Takes one token from a user's bucket, by the server's clock, so that every dispatcher
-- (and every gateway a user is connected through) draws on one budget.
-- KEYS[1]: the bucket (hash: tokens, ts in unix ms).
-- ARGV[1]: tokens added per second, ARGV[2]: the bucket's size (a full one on first use).
-- Returns 1 when a token was taken, 0 when the bucket is empty.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local size = tonumber(ARGV[2])
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(stored[1]) or size
local ts = tonumber(stored[2]) or now
tokens = math.min(size, tokens + math.max(0, now - ts) * rate / 1000)
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.3f', tokens), 'ts', now)
-- Gone once it would be full again anyway.
redis.call('PEXPIRE', KEYS[1], math.ceil(size / rate * 1000) + 1000)
return taken
