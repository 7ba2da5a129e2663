-- Renews one dispatcher's place in the roster and reads the live dispatchers back, by
-- the server's clock so that the dispatchers' own clocks need not agree.
-- KEYS[1]: the roster (sorted set: dispatcher id -> expiry, unix ms).
-- ARGV[1]: the dispatcher's id, ARGV[2]: how long its entry lives, ms.
-- Returns the ids of the live dispatchers, in id order.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(ids)
return ids
