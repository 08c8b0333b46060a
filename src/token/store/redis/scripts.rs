//! The Lua scripts every Redis write goes through, each built (and hashed for `EVALSHA`)
//! once per process. Keys and arguments are documented per script; see the layout in the
//! parent module.

use redis::Script;
use std::sync::LazyLock;

/// Writes `sealed` as the next generation if the writer may.
///
/// KEYS: token hash, lease. ARGV: holder (empty: no lease needed), mode (`fenced` or
/// `supersede`), floor (the generation the writer's set was refreshed from), sealed,
/// channel, connection key.
///
/// Refuses with -1 when the writer named a lease it no longer holds, and with -2 when
/// `fenced` and Redis holds a set newer than `floor` (someone refreshed after the writer's
/// base). The new generation is above both the stored one and `floor`, so a Redis
/// restarted empty never goes backwards. Releases the lease and publishes `<gen> <key>`.
pub(super) static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen')) or 0
local floor = tonumber(ARGV[3])
if ARGV[2] == 'fenced' and gen > floor then return -2 end
if floor > gen then gen = floor end
gen = gen + 1
redis.call('HSET', KEYS[1], 'gen', gen, 'sealed', ARGV[4])
if ARGV[1] ~= '' then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[5], gen .. ' ' .. ARGV[6])
return gen
",
    )
});

/// Writes `sealed` at generation ARGV[1] only if Redis holds an older one or none: a
/// replica putting back what Redis lost or never got. KEYS: token hash. ARGV: generation,
/// sealed, channel, connection key. Returns 1 when it wrote.
pub(super) static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen')) or 0
if gen >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'sealed', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' ' .. ARGV[4])
return 1
",
    )
});

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
