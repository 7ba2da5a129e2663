-- A room's epoch (created if missing) and latest seq (0 when nothing was stored), read
-- together so that they always belong to each other.
--
-- KEYS[1] epoch, KEYS[2] seq; ARGV[1] a fresh epoch, used only if the room has none
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local seq = redis.call('GET', KEYS[2])
return { epoch, seq or '0' }
