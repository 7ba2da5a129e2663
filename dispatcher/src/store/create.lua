-- Creates a public room with its first owner, unless the room already exists.
--
-- KEYS[1] meta, KEYS[2] roles; ARGV[1] created (unix ms), ARGV[2] the owner
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'visibility', 'public', 'announce', '0', 'created', ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], 'owner')
return 1
