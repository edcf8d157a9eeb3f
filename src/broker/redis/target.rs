//! Which Redis the hub talks to: one node, or a Redis Cluster.
//!
//! - `redis://host:port[/db]` (or `rediss://`, `unix://`): a single node, exactly as
//!   before: plain SUBSCRIBE/PUBLISH on `progress:<id>`.
//! - `redis+cluster://h1:p1,h2:p2,...` (or `rediss+cluster://`): a Redis Cluster, given
//!   by one or more seed nodes (the rest of the topology is discovered). Credentials and
//!   query parameters written once apply to every seed:
//!   `redis+cluster://:secret@h1:p1,h2:p2/?protocol=3`. On a cluster, events travel by
//!   sharded Pub/Sub (SSUBSCRIBE/SPUBLISH) on `progress:{<id>}`, which hashes to the
//!   project's slot; the legacy plain `PUBLISH progress:<id>` is not supported there.

use super::layout;
use crate::broker::BrokerError;
use crate::wire::ProjectId;

/// A parsed `--redis-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One node: the URL as given.
    Single(String),
    /// A cluster: one `redis://` (or `rediss://`) URL per seed node.
    Cluster(Vec<String>),
}

impl RedisTarget {
    pub fn parse(url: &str) -> Result<Self, BrokerError> {
        let (scheme, rest) = match url.split_once("://") {
            Some(("redis+cluster", rest)) => ("redis", rest),
            Some(("rediss+cluster", rest)) => ("rediss", rest),
            _ => return Ok(Self::Single(url.to_string())),
        };
        let bad = |why: &str| BrokerError::InvalidUrl(format!("{why} in a cluster URL"));
        // [userinfo@]host:port,host:port[/path][?query]
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let tail_at = rest.find(['/', '?']).unwrap_or(rest.len());
        let (hosts, tail) = rest.split_at(tail_at);
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|host| match userinfo {
                Some(user) => format!("{scheme}://{user}@{host}{tail}"),
                None => format!("{scheme}://{host}{tail}"),
            })
            .collect();
        if seeds.is_empty() {
            return Err(bad("no seed node"));
        }
        // Each seed must be a URL redis-rs accepts.
        for seed in &seeds {
            redis::Client::open(seed.as_str())
                .map_err(|e| BrokerError::InvalidUrl(format!("{seed}: {e}")))?;
        }
        Ok(Self::Cluster(seeds))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The project's Pub/Sub channel here: `progress:<id>` on one node (as the original
    /// Python publisher names it), `progress:{<id>}` (its slot) on a cluster.
    pub fn channel(&self, project: &ProjectId) -> String {
        match self {
            Self::Single(_) => layout::channel(project),
            Self::Cluster(_) => layout::shard_channel(project),
        }
    }

    /// The command that publishes on [`Self::channel`]: PUBLISH, or SPUBLISH on a cluster.
    pub fn publish_command(&self) -> &'static str {
        match self {
            Self::Single(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_is_a_single_node() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/2").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379/2".into())
        );
    }

    #[test]
    fn a_cluster_url_names_its_seeds() {
        assert_eq!(
            RedisTarget::parse("redis+cluster://h1:7000,h2:7001").unwrap(),
            RedisTarget::Cluster(vec!["redis://h1:7000".into(), "redis://h2:7001".into()])
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://:pw@h1:7000,h2:7001/?protocol=3").unwrap(),
            RedisTarget::Cluster(vec![
                "redis://:pw@h1:7000/?protocol=3".into(),
                "redis://:pw@h2:7001/?protocol=3".into()
            ])
        );
    }

    #[test]
    fn a_cluster_url_without_seeds_is_refused() {
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        assert!(RedisTarget::parse("redis+cluster://,").is_err());
    }
}
