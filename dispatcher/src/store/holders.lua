-- Which live gateways hold each user (see common::store::keys).
-- KEYS[1]: the gateways' registrations (sorted set: gateway id -> expiry, unix ms).
-- ARGV[1]: what every registry key starts with, `<prefix>:{gw}`; ARGV[2]: now, unix ms;
-- ARGV[3..]: user ids.
-- Returns, for each user in order, the ids of the gateways holding them, comma-joined.
-- Registrations past their expiry are dropped on the way.
--
-- The users' sets are read by the names built here, since which gateways are live is
-- only known from KEYS[1]. Redis Cluster serves that because the whole registry shares
-- the `{gw}` hash tag: every set named here is in KEYS[1]'s slot, on this node.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for i = 3, #ARGV do
  local held = {}
  for _, gw in ipairs(live) do
    if redis.call('SISMEMBER', ARGV[1] .. ':' .. gw .. ':users', ARGV[i]) == 1 then
      held[#held + 1] = gw
    end
  end
  out[#out + 1] = table.concat(held, ',')
end
return out
