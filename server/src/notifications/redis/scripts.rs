//! The Lua scripts of the channel streams: each operation is one script,
//! atomic in Redis, computing with the caller's clock (see the module above
//! for the key layout). Every key a script touches is in its KEYS, all of
//! them in the slots of the channels' hash tags; the scripts build no key
//! names.

use redis::Script;

/// Helpers shared by the scripts: entry ids and fields, the age limit.
/// ARGV[1] = now (ms), ARGV[2] = age limit (ms).
const PRELUDE: &str = r#"
local now = tonumber(ARGV[1])
local cutoff = now - tonumber(ARGV[2])
local function id(offset) return string.format('%d', offset) .. '-0' end
-- The replication history of the primary running the script: a replica
-- promoted in a failover starts a new one (as may a restarted primary).
local function history()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
end
-- Forgets a channel last written under another history: writes the former
-- primary acknowledged may not have reached this one, and their offsets
-- would be given again to other events. Its next publish begins a new
-- epoch, which tells every resuming subscriber that history was lost.
local function forget_if_written_elsewhere(key, meta, current)
  local written = redis.call('HGET', meta, 'primary')
  if written and written ~= current then redis.call('DEL', key, meta) end
end
local function field(entry, name)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
local function offset_of(entry) return tonumber(string.match(entry[1], '^(%d+)')) end
local function young(entry) return (tonumber(field(entry, 't')) or 0) >= cutoff end
-- The offset of the first entry young enough to count, nil when there is
-- none; with trim, the older entries are deleted. Binary search over
-- offsets: P(x) = "the first entry at or after x is young" rises with x.
local function first_young(key, trim)
  local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
  if not head then return nil end
  if young(head) then return offset_of(head) end
  local tail = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  if not young(tail) then
    if trim then redis.call('DEL', key) end
    return nil
  end
  local lo, hi, first = offset_of(head), offset_of(tail), offset_of(tail)
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    local entry = redis.call('XRANGE', key, id(mid), '+', 'COUNT', 1)[1]
    if young(entry) then
      hi = mid
      first = offset_of(entry)
    else
      lo = mid
    end
  end
  if trim then redis.call('XTRIM', key, 'MINID', id(hi)) end
  return first
end
"#;

/// Per channel, in order, its keys in KEYS: stream, meta, and with an
/// idempotency key its dedup key. ARGV[3] = max events, ARGV[4] = key TTL
/// (ms), ARGV[5] = the event encoded without channel, offset and epoch,
/// ARGV[6] = keys per channel (2, or 3 with an idempotency key), ARGV[7] =
/// the dedup window (ms), ARGV[8] = the publish command (`PUBLISH` or
/// `SPUBLISH`), then (channel, new epoch) pairs. Returns
/// {offset, epoch, duplicate (0 or 1)} per channel.
const PUBLISH: &str = r#"
local function varint(n)
  local out = {}
  while n >= 128 do
    table.insert(out, string.char(n % 128 + 128))
    n = math.floor(n / 128)
  end
  table.insert(out, string.char(n))
  return table.concat(out)
end
local function bytes_field(number, s) return string.char(number * 8 + 2) .. varint(#s) .. s end
-- An earlier publish with the idempotency key, in the channel's current
-- epoch and within the window by the caller's clock: {offset, epoch}, else
-- nil. (PX only cleans up; the time in the value decides.)
local function earlier(dedup, meta)
  local prior = redis.call('GET', dedup)
  if not prior then return nil end
  local offset, until_ms, epoch = string.match(prior, '^(%d+) (%d+) (.+)$')
  if offset and tonumber(until_ms) > now and redis.call('HGET', meta, 'epoch') == epoch then
    return {tonumber(offset), epoch}
  end
  return nil
end
local stride = tonumber(ARGV[6])
local current = history()
local out = {}
for i = 9, #ARGV, 2 do
  local base = (i - 9) / 2 * stride
  local key, meta = KEYS[base + 1], KEYS[base + 2]
  local dedup = nil
  if stride == 3 then dedup = KEYS[base + 3] end
  forget_if_written_elsewhere(key, meta, current)
  local prior = dedup and earlier(dedup, meta)
  if prior then
    table.insert(out, {prior[1], prior[2], 1})
  else
    if redis.call('HSETNX', meta, 'epoch', ARGV[i + 1]) == 1 then
      redis.call('DEL', key)
      redis.call('HSET', meta, 'primary', current)
    end
    local offset = redis.call('HINCRBY', meta, 'offset', 1)
    local epoch = redis.call('HGET', meta, 'epoch')
    local event = ARGV[5] .. bytes_field(1, ARGV[i]) .. string.char(3 * 8) .. varint(offset) .. bytes_field(4, epoch)
    first_young(key, true)
    redis.call('XADD', key, 'MAXLEN', ARGV[3], id(offset), 't', ARGV[1], 'e', event)
    redis.call('PEXPIRE', key, ARGV[4])
    redis.call('PEXPIRE', meta, ARGV[4])
    if dedup then
      local value = string.format('%d %d ', offset, now + tonumber(ARGV[7])) .. epoch
      redis.call('SET', dedup, value, 'PX', ARGV[7])
    end
    redis.call(ARGV[8], key, event)
    table.insert(out, {offset, epoch, 0})
  end
end
return out
"#;

/// KEYS[1] = stream, KEYS[2] = meta. ARGV[3] = key TTL (ms). Returns
/// {epoch, offset, earliest, size}; {'', 0, 0, 0} for a channel nobody
/// published to, which it leaves without a key (asking about a channel must
/// not create one).
const CHANNEL: &str = r#"
local key, meta = KEYS[1], KEYS[2]
forget_if_written_elsewhere(key, meta, history())
if redis.call('EXISTS', meta) == 0 then
  redis.call('DEL', key)
  return {'', 0, 0, 0}
end
redis.call('PEXPIRE', meta, ARGV[3])
local first = first_young(key, true)
local size = 0
if first then size = redis.call('XLEN', key) else first = 0 end
local offset = tonumber(redis.call('HGET', meta, 'offset') or '0')
return {redis.call('HGET', meta, 'epoch'), offset, first, size}
"#;

/// KEYS[1] = stream, KEYS[2] = meta. ARGV[3] = after (offset), ARGV[4] =
/// limit. Changes nothing. Returns {epoch or nil, {t1, e1, t2, e2, …}}.
const READ: &str = r#"
local key = KEYS[1]
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local out = {}
local first = first_young(key, false)
if first then
  local start = math.max(tonumber(ARGV[3]) + 1, first)
  for _, entry in ipairs(redis.call('XRANGE', key, id(start), '+', 'COUNT', ARGV[4])) do
    table.insert(out, field(entry, 't') or '')
    table.insert(out, field(entry, 'e') or '')
  end
end
return {epoch, out}
"#;

/// Offsets beyond this cannot occur (Lua counts in doubles).
pub(super) const MAX_OFFSET: u64 = 1 << 53;

/// The scripts, loaded once (EVALSHA, falling back to EVAL after a Redis
/// restart).
pub(super) struct Scripts {
    pub(super) publish: Script,
    pub(super) channel: Script,
    pub(super) read: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            publish: script(PUBLISH),
            channel: script(CHANNEL),
            read: script(READ),
        }
    }
}
