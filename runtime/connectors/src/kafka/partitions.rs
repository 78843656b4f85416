//! Which subtask reads which partition (Flink's `KafkaSourceEnumerator#getSplitOwner`), so
//! that a job moved between the engines spreads partitions the same way.

/// Java's `String#hashCode` (over UTF-16 code units, wrapping).
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The subtask (of `parallelism`) that reads `partition` of `topic`: the topic's partitions
/// start at a subtask given by the topic's hash and go round-robin from there.
pub fn owner(topic: &str, partition: i32, parallelism: usize) -> usize {
    let p = parallelism.max(1) as i64;
    let start = i64::from(java_hash(topic).wrapping_mul(31) & 0x7FFF_FFFF) % p;
    ((start + i64::from(partition)) % p) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_string_hash_matches_java() {
        // Values of "…".hashCode() in Java.
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("orders"), -1008770331);
        assert_eq!(java_hash("hello world"), 1794106052);
    }

    #[test]
    fn partitions_of_a_topic_go_round_robin_from_the_topics_start() {
        let p = 3;
        let first = owner("orders", 0, p);
        for part in 0..9 {
            assert_eq!(owner("orders", part, p), (first + part as usize) % p);
        }
        assert_eq!(owner("orders", 5, 1), 0);
    }
}
