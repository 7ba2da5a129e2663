-- Stores one message atomically: the room's epoch (created if missing), the next seq,
-- the message in the capped history and in the id index, and the sender's dedup key.
-- A crash can leave either all of it or none of it, never a seq gap, a stored-but-not-
-- deduped message, or an index entry without its message.
--
-- KEYS[1] epoch, KEYS[2] seq, KEYS[3] history, KEYS[4] ids, KEYS[5] floor,
-- KEYS[6] dedup (optional)
-- ARGV[1] a fresh epoch, used only if the room has none
-- ARGV[2] the message JSON up to (not including) its "seq" member
-- ARGV[3] the message JSON after its "epoch" member
-- ARGV[4] messages kept in history
-- ARGV[5] dedup expiry, seconds
-- ARGV[6] the message id
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
if not string.match(epoch, '^[%w_%-]+$') then
  return redis.error_reply('warren: room epoch is not an id')
end
local seq = redis.call('INCR', KEYS[2])
local message = ARGV[2] .. ',"seq":' .. string.format('%d', seq) .. ',"epoch":"' .. epoch .. '",' .. ARGV[3]
redis.call('ZADD', KEYS[3], seq, message)
redis.call('HSET', KEYS[4], ARGV[6], seq)
-- Trim the oldest past the limit, their index entries with them, and remember the
-- highest seq trimmed: recovery tells trimmed messages (lost) from deleted ones.
local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[4])
if excess > 0 then
  local old = redis.call('ZRANGE', KEYS[3], 0, excess - 1, 'WITHSCORES')
  for i = 1, #old, 2 do
    -- Stored messages start {"room":"..","id":"..": neither a room nor an id holds a quote.
    local id = string.match(old[i], '^{"room":"[^"]*","id":"([^"]*)"')
    if id then
      redis.call('HDEL', KEYS[4], id)
    end
  end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, excess - 1)
  local top = tonumber(old[#old])
  local floor = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
  if top > floor then
    redis.call('SET', KEYS[5], string.format('%d', top))
  end
end
if KEYS[6] then
  redis.call('SET', KEYS[6], message, 'EX', ARGV[5])
end
return message
