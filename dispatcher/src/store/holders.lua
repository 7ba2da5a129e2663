-- Which live gateways hold each user (see common::store::keys).
-- KEYS[1]: the gateways' registrations (sorted set: gateway id -> expiry, unix ms).
-- ARGV[1]: the key prefix; ARGV[2]: now, unix ms; ARGV[3..]: user ids.
-- Returns, for each user in order, the ids of the gateways holding them, comma-joined.
-- Registrations past their expiry are dropped on the way. (The per-gateway sets are
-- read by name, which a single Redis allows; Redis Cluster would need them in KEYS.)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for i = 3, #ARGV do
  local held = {}
  for _, gw in ipairs(live) do
    if redis.call('SISMEMBER', ARGV[1] .. ':gw:' .. gw .. ':users', ARGV[i]) == 1 then
      held[#held + 1] = gw
    end
  end
  out[#out + 1] = table.concat(held, ',')
end
return out
