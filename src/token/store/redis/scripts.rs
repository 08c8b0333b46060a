//! The Lua scripts every token write and runtime-connection change (and the bounded reads)
//! go through, each built (and hashed for `EVALSHA`) once per process. Keys and arguments are documented per
//! script; see the layout in the parent module.
//!
//! Generations cross the script boundary as decimal strings written by Rust, and are never
//! turned back into strings by Lua (whose `..` prints numbers beyond 10^14 in exponent
//! notation). A stored `gen` that is not a decimal integer within [`MAX_GENERATION`] counts as
//! 0 (see `STORED_GEN`): such a value is refused by every reader, and any write replaces it.

use super::link::Con;
use super::MAX_GENERATION;
use redis::{
    Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, Script, ServerErrorKind, ToRedisArgs,
};
use std::sync::LazyLock;

/// `stored_gen(key)`: the `gen` field of the token hash `key` as a number, or 0 when absent
/// or unusable (not digits, or beyond the bound: Lua numbers hold integers exactly only up
/// to 2^53, and 16 digits cannot reach the next power of ten).
fn stored_gen() -> String {
    format!(
        r"
local function stored_gen(key)
  local raw = redis.call('HGET', key, 'gen')
  if raw and #raw <= 16 and string.match(raw, '^%d+$') then
    local n = tonumber(raw)
    if n <= {MAX_GENERATION} then return n end
  end
  return 0
end
"
    )
}

/// A script with the `stored_gen` helper in front of `body`.
fn with_stored_gen(body: &str) -> Script {
    Script::new(&format!("{}{body}", stored_gen()))
}

/// Writes `sealed` at generation G if the writer may.
///
/// KEYS: token hash, lease, and for a per-user grant its connection's subject index and
/// expiry index. ARGV: holder (empty: no lease needed), mode (`fenced` or `supersede`),
/// floor (the generation the writer's set was refreshed from), G (above floor; sealed into
/// the value), sealed, channel, message (the connection key, or `<key> <subject>`), and
/// for a per-user grant its subject and expiry score (see `INDEX`).
///
/// Refuses with -1 when the writer named a lease it no longer holds, with -2 when `fenced`
/// and Redis holds a set newer than `floor` (someone refreshed after the writer's base),
/// and with -3 when Redis holds G or newer (the writer reads the generation again and
/// proposes one above it). Otherwise writes, releases the lease, publishes `<G> <key>` and
/// returns 1 — or, with an empty channel (a set that must reach replicas first, see
/// `tokens`), writes and returns 1, keeping the lease and announcing nothing ([`ANNOUNCE`]
/// does both after the `WAIT`). G is above both the stored generation and `floor`, so a Redis restarted empty
/// never goes backwards. A fenced write onto a deleted grant's tombstone is refused (-2:
/// the deletion raised the generation); a superseding one (a new grant) replaces it.
pub(super) static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    with_stored_gen(&format!(
        "{INDEX}{}",
        r"
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local gen = stored_gen(KEYS[1])
if ARGV[2] == 'fenced' and gen > tonumber(ARGV[3]) then return -2 end
if gen >= tonumber(ARGV[4]) then return -3 end
redis.call('HSET', KEYS[1], 'gen', ARGV[4], 'sealed', ARGV[5])
index(KEYS[1], KEYS[3], KEYS[4], ARGV[8], ARGV[9])
if ARGV[6] == '' then return 1 end
if ARGV[1] ~= '' then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[6], ARGV[4] .. ' ' .. ARGV[7])
return 1
"
    ))
});

/// `index(hash, subjects, expiry, subject, score)`: for a per-user grant (`subjects` given),
/// clears a tombstone's marks from its hash and records the subject in its connection's
/// subject index (a sorted set, every score 0, paged by subject) and expiry index (score:
/// the access token's expiry in Unix milliseconds, [`super::LONG_LIVED`] for none).
const INDEX: &str = r"
local function index(hash, subjects, expiry, subject, score)
  if not subjects then return end
  redis.call('HDEL', hash, 'deleted')
  redis.call('PERSIST', hash)
  redis.call('ZADD', subjects, 0, subject)
  redis.call('ZADD', expiry, score, subject)
end
";

/// Writes `sealed` at generation ARGV[1] only if Redis holds an older one or none: a
/// replica putting back what Redis lost or never got — never over a deleted grant's
/// tombstone. KEYS: token hash, lease (unused: it keeps the key list of [`COMMIT`]), and
/// for a per-user grant the two indexes. ARGV: generation, sealed, channel, message, and
/// for a per-user grant its subject and expiry score. Returns 1 when it wrote.
pub(super) static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    with_stored_gen(&format!(
        "{INDEX}{}",
        r"
if redis.call('HEXISTS', KEYS[1], 'deleted') == 1 then return 0 end
if stored_gen(KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'sealed', ARGV[2])
index(KEYS[1], KEYS[3], KEYS[4], ARGV[5], ARGV[6])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' ' .. ARGV[4])
return 1
"
    ))
});

/// Deletes a per-user grant, leaving a tombstone: its hash keeps only `gen` (raised to
/// ARGV[2], so a refresh in flight is fenced out) and `deleted`, and expires after ARGV[6]
/// ms; its subject leaves both indexes. Compare-and-set on the `gen` read (ARGV[1], empty:
/// none), so a write in between is not lost silently: -3 asks the caller to read again.
/// KEYS: token hash, subject index, expiry index. ARGV: `gen` read, new generation,
/// channel, message, subject, tombstone lifetime in ms. Returns 1 when a grant was deleted,
/// 0 when there was none.
pub(super) static REMOVE_GRANT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HGET', KEYS[1], 'gen') or ''
if cur ~= ARGV[1] then return -3 end
redis.call('ZREM', KEYS[2], ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[5])
if cur == '' or redis.call('HEXISTS', KEYS[1], 'deleted') == 1 then return 0 end
redis.call('HDEL', KEYS[1], 'sealed')
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'deleted', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[3], ARGV[2] .. ' ' .. ARGV[4])
return 1
",
    )
});

/// Re-seals a value of an earlier version in place: writes `sealed` at generation ARGV[2]
/// only if `gen` still reads exactly ARGV[1] (compare-and-set, so two replicas upgrading
/// at once write once). KEYS: token hash. ARGV: the `gen` read, new generation, sealed,
/// channel, connection key. Returns 1 when it wrote.
pub(super) static UPGRADE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'sealed', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[2] .. ' ' .. ARGV[5])
return 1
",
    )
});

/// Reads a token hash without fetching an oversized `sealed` field: `[gen, sealed,
/// deleted]`, or `[gen, length, deleted]` (an integer) when `sealed` is longer than ARGV[1]
/// bytes; `deleted` is 1 for a deleted grant's tombstone, else 0. KEYS: token hash. Absent
/// fields are nil.
pub(super) static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local gen = redis.call('HGET', KEYS[1], 'gen')
local deleted = redis.call('HEXISTS', KEYS[1], 'deleted')
local len = redis.call('HSTRLEN', KEYS[1], 'sealed')
if len > tonumber(ARGV[1]) then return {gen, len, deleted} end
return {gen, redis.call('HGET', KEYS[1], 'sealed'), deleted}
",
    )
});

/// Announces a set [`COMMIT`] wrote without announcing it, after its `WAIT`: gives the
/// lease back if it is still the writer's, and publishes `<G> <message>`. KEYS: lease.
/// ARGV: holder (empty: none), channel, G, message.
pub(super) static ANNOUNCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. ARGV[4])
return 1
",
    )
});

/// A script call kept as its keys and arguments, so that it can also be sent as `EVALSHA`
/// in a pipeline with `WAIT` after it: `WAIT` counts the replicas that hold the writes of
/// its own connection, which a pipeline shares. Every script call goes through one: a
/// script the server does not hold is loaded where the call runs (in a cluster, on the
/// master of its first key's slot, which is where `EVALSHA` goes).
pub(super) struct Call {
    script: &'static Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call {
    pub fn new(script: &'static Script) -> Call {
        Call {
            script,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn key(&mut self, key: impl ToRedisArgs) -> &mut Call {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Call {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// Runs the script (loading it first when the server does not hold it).
    pub async fn invoke<T: FromRedisValue>(&self, con: &mut Con) -> RedisResult<T> {
        match self.evalsha().query_async(con).await {
            Err(e) if no_script(&e) => {
                self.load(con).await?;
                self.evalsha().query_async(con).await
            }
            answer => answer,
        }
    }

    /// Loads the script where this call runs.
    async fn load(&self, con: &mut Con) -> RedisResult<()> {
        con.load_script(self.script, self.keys.first().map(Vec::as_slice))
            .await
    }

    /// Runs the script, then `WAIT replicas timeout_ms`, in one pipeline: the script's
    /// answer and the number of replicas that acknowledged.
    pub async fn invoke_then_wait(
        &self,
        con: &mut Con,
        replicas: u32,
        timeout_ms: u64,
    ) -> RedisResult<(i64, u32)> {
        let pipeline = || {
            let mut pipe = redis::pipe();
            pipe.add_command(self.evalsha())
                .cmd("WAIT")
                .arg(replicas)
                .arg(timeout_ms);
            pipe
        };
        match pipeline().query_async(con).await {
            Err(e) if no_script(&e) => {
                self.load(con).await?;
                pipeline().query_async(con).await
            }
            answer => answer,
        }
    }

    fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }
}

fn no_script(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Deletes the lease only if it is still the caller's (compare-and-delete). KEYS: lease.
/// ARGV: holder.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Writes a runtime connection's sealed definition and records the change.
///
/// KEYS: definition, change generation counter, change set. ARGV: sealed, channel,
/// connection key, the highest generation allowed. Returns the new change generation as a
/// decimal string, or -1 (nothing written) when the counter is unusable or at the bound.
/// The value is written before the change is recorded, so no reader sees the change
/// without it.
pub(super) static PUT_DEFINITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        next_change(),
        r"
if not usable_counter(KEYS[2], ARGV[4]) then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
return record_change(KEYS[2], KEYS[3], ARGV[2], ARGV[3])
"
    ))
});

/// Creates a runtime connection's definition: as [`PUT_DEFINITION`], but only when it has
/// none (two replicas creating one key at once: the second is refused). Returns `-2`
/// when it has one, nothing written.
pub(super) static CREATE_DEFINITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        next_change(),
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return -2 end
if not usable_counter(KEYS[2], ARGV[4]) then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
return record_change(KEYS[2], KEYS[3], ARGV[2], ARGV[3])
"
    ))
});

/// Deletes a runtime connection: its definition (and on a single Redis its token set and
/// lease, which a cluster keeps in another slot: `connections` deletes them next), and
/// records the change.
///
/// KEYS: definition, change generation counter, change set, then any other keys to delete
/// (token hash, lease). ARGV: channel, connection key, the highest generation allowed.
/// Returns as [`PUT_DEFINITION`] does.
pub(super) static REMOVE_DEFINITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}{}",
        next_change(),
        r"
if not usable_counter(KEYS[2], ARGV[3]) then return -1 end
redis.call('DEL', KEYS[1], unpack(KEYS, 4))
return record_change(KEYS[2], KEYS[3], ARGV[1], ARGV[2])
"
    ))
});

/// `usable_counter(counter, bound)`: whether the change counter is absent or a decimal
/// integer below `bound`. `record_change(counter, changes, channel, key)`: bumps the
/// counter, records `key` at the new generation, publishes `<gen> <key>` and returns the
/// generation as text (`%d`: never exponent notation).
fn next_change() -> &'static str {
    r"
local function usable_counter(counter, bound)
  local raw = redis.call('GET', counter)
  if not raw then return true end
  if #raw > 16 or not string.match(raw, '^%d+$') then return false end
  return tonumber(raw) < tonumber(bound)
end
local function record_change(counter, changes, channel, key)
  local gen = string.format('%d', redis.call('INCR', counter))
  redis.call('ZADD', changes, gen, key)
  redis.call('PUBLISH', channel, gen .. ' ' .. key)
  return gen
end
"
}

/// The current change generation and the connections changed after ARGV[1], read at one
/// instant: `[gen or nil, [key…]]`. KEYS: change generation counter, change set.
pub(super) static CHANGES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local gen = redis.call('GET', KEYS[1])
return {gen, redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')}
",
    )
});

/// Reads definitions without fetching an oversized one: per key, its value, its length
/// (an integer) when longer than ARGV[1] bytes, -1 when the key is not a string, or nil
/// when absent. KEYS: definitions.
pub(super) static READ_DEFINITIONS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then out[i] = false
  elseif kind ~= 'string' then out[i] = -1
  else
    local len = redis.call('STRLEN', key)
    if len > tonumber(ARGV[1]) then out[i] = len else out[i] = redis.call('GET', key) end
  end
end
return out
",
    )
});
