-- Claims a place among one user's connections across every gateway, if the user has
-- fewer than the cap. Places held by gateways that are no longer alive (not in ARGV)
-- are dropped on the way, so a gateway that died gives its places back once its
-- registration expires.
-- KEYS[1]: the user's places (set of "<gateway>|<place>").
-- ARGV[1]: the cap, ARGV[2]: the place to claim, ARGV[3..]: the live gateways' ids.
-- Returns 1 when claimed, 0 when the user is at the cap.
local live = {}
for i = 3, #ARGV do
  live[ARGV[i]] = true
end
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local gateway = string.match(member, '^([^|]*)|')
  if not gateway or not live[gateway] then
    redis.call('SREM', KEYS[1], member)
  end
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[2])
-- Only a bound on keys nobody cleans up (every place is pruned or removed before).
redis.call('EXPIRE', KEYS[1], 86400)
return 1
