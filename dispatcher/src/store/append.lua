-- Stores one message atomically: the room's epoch (created if missing), the next seq,
-- the message in the capped history, and the sender's dedup key. A crash can leave
-- either all of it or none of it, never a seq gap or a stored-but-not-deduped message.
--
-- KEYS[1] epoch, KEYS[2] seq, KEYS[3] history, KEYS[4] dedup (optional)
-- ARGV[1] a fresh epoch, used only if the room has none
-- ARGV[2] the message JSON up to (not including) its "seq" member
-- ARGV[3] the message JSON after its "epoch" member
-- ARGV[4] messages kept in history
-- ARGV[5] dedup expiry, seconds
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
if not string.match(epoch, '^[%w_%-]+$') then
  return redis.error_reply('warren: room epoch is not an id')
end
local seq = redis.call('INCR', KEYS[2])
local message = ARGV[2] .. ',"seq":' .. string.format('%d', seq) .. ',"epoch":"' .. epoch .. '",' .. ARGV[3]
redis.call('ZADD', KEYS[3], seq, message)
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[4]) + 1))
if KEYS[4] then
  redis.call('SET', KEYS[4], message, 'EX', ARGV[5])
end
return message
