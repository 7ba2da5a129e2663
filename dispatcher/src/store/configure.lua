-- Creates or updates a room declared in configuration, atomically: its settings, and
-- the roles of its listed owners and moderators. Idempotent; never demotes anyone (a
-- listed moderator who is an owner stays owner) and never touches other users' roles.
--
-- KEYS[1] meta, KEYS[2] roles
-- ARGV[1] visibility, ARGV[2] announce (0|1), ARGV[3] history_limit ('' for none),
-- ARGV[4] history_on_join ('' for none), ARGV[5] now (unix ms),
-- ARGV[6] the number of owners n, ARGV[7 .. 6+n] owners, then the moderators
redis.call('HSET', KEYS[1], 'visibility', ARGV[1], 'announce', ARGV[2])
redis.call('HSETNX', KEYS[1], 'created', ARGV[5])
local overrides = { history_limit = ARGV[3], history_on_join = ARGV[4] }
for field, value in pairs(overrides) do
  if value == '' then
    redis.call('HDEL', KEYS[1], field)
  else
    redis.call('HSET', KEYS[1], field, value)
  end
end
local owners = tonumber(ARGV[6])
for i = 7, 6 + owners do
  redis.call('HSET', KEYS[2], ARGV[i], 'owner')
end
for i = 7 + owners, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) ~= 'owner' then
    redis.call('HSET', KEYS[2], ARGV[i], 'moderator')
  end
end
return 1
