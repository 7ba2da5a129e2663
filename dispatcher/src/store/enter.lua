-- Records one session's presence in a room and reads the room's presence back, whole
-- while the room is small, as a sample once it is large (reading 19,000 entries on each
-- of 19,000 joins would be N² work).
-- KEYS[1]: the room's presence hash. ARGV[1]: session, ARGV[2]: entry JSON,
-- ARGV[3]: the largest room read whole, ARGV[4]: how many entries a sample holds.
-- Returns {sessions in the room, flat session/entry list}.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local n = redis.call('HLEN', KEYS[1])
if n <= tonumber(ARGV[3]) then
  return {n, redis.call('HGETALL', KEYS[1])}
end
return {n, redis.call('HRANDFIELD', KEYS[1], tonumber(ARGV[4]), 'WITHVALUES')}
