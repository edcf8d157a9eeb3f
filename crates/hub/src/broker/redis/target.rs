//! Which Redis the hub talks to: one node, a Sentinel-managed primary, or a Redis
//! Cluster.
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
    /// A primary found through Redis Sentinel.
    Sentinel(SentinelTarget),
}

/// A `redis+sentinel://` URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// One `redis://` URL per sentinel, carrying the sentinels' credentials.
    pub sentinels: Vec<String>,
    /// The name the sentinels know the primary by (`sentinel monitor <master> ...`).
    pub master: String,
    /// The data nodes' credentials and database, as a `redis://` URL whose host is a
    /// placeholder: the host is whatever the sentinels name.
    pub node: String,
}

impl RedisTarget {
    pub fn parse(url: &str) -> Result<Self, BrokerError> {
        let (scheme, rest) = match url.split_once("://") {
            Some(("redis+cluster", rest)) => ("redis", rest),
            Some(("rediss+cluster", rest)) => ("rediss", rest),
            Some(("redis+sentinel", rest)) => return parse_sentinel(rest).map(Self::Sentinel),
            Some(("rediss+sentinel", _)) => {
                return Err(BrokerError::InvalidUrl(
                    "rediss+sentinel://: this build has no TLS support".into(),
                ));
            }
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

    /// The project's Pub/Sub channel here: `progress:<id>` on one node or a Sentinel
    /// primary (as the original Python publisher names it), `progress:{<id>}` (its
    /// slot) on a cluster.
    pub fn channel(&self, project: &ProjectId) -> String {
        match self {
            Self::Single(_) | Self::Sentinel(_) => layout::channel(project),
            Self::Cluster(_) => layout::shard_channel(project),
        }
    }

    /// The command that publishes on [`Self::channel`]: PUBLISH, or SPUBLISH on a cluster.
    pub fn publish_command(&self) -> &'static str {
        match self {
            Self::Single(_) | Self::Sentinel(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }
}

/// `[user:pass@]h1:p1,h2:p2/<master>[/db][?query]`, after `redis+sentinel://`.
fn parse_sentinel(rest: &str) -> Result<SentinelTarget, BrokerError> {
    let bad = |why: &str| BrokerError::InvalidUrl(format!("{why} in a sentinel URL"));
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut path = path.split('/').filter(|p| !p.is_empty());
    let master = path.next().ok_or_else(|| bad("no master name"))?;
    let db = path.next();
    if path.next().is_some() {
        return Err(bad("a path longer than /<master>/<db>"));
    }
    if let Some(db) = db
        && db.parse::<u32>().is_err()
    {
        return Err(bad("a database that is not a number"));
    }
    let mut sentinel_userinfo = (String::new(), None::<String>);
    let mut node_query = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("sentinel_username", v)) => sentinel_userinfo.0 = v.to_string(),
            Some(("sentinel_password", v)) => sentinel_userinfo.1 = Some(v.to_string()),
            _ => node_query.push(pair),
        }
    }
    let sentinel_auth = match sentinel_userinfo {
        (user, Some(pass)) => format!("{user}:{pass}@"),
        (user, None) if !user.is_empty() => format!("{user}@"),
        _ => String::new(),
    };
    let sentinels: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|host| format!("redis://{sentinel_auth}{host}"))
        .collect();
    if sentinels.is_empty() {
        return Err(bad("no sentinel"));
    }
    let node = format!(
        "redis://{}sentinel-primary/{}{}",
        userinfo.map(|u| format!("{u}@")).unwrap_or_default(),
        db.unwrap_or("0"),
        if node_query.is_empty() {
            String::new()
        } else {
            format!("?{}", node_query.join("&"))
        }
    );
    for url in sentinels.iter().chain([&node]) {
        redis::Client::open(url.as_str())
            .map_err(|e| BrokerError::InvalidUrl(format!("{url}: {e}")))?;
    }
    Ok(SentinelTarget {
        sentinels,
        master: master.to_string(),
        node,
    })
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
    fn a_sentinel_url_names_its_sentinels_master_and_node_settings() {
        assert_eq!(
            RedisTarget::parse("redis+sentinel://h1:26379,h2:26380/mymaster").unwrap(),
            RedisTarget::Sentinel(SentinelTarget {
                sentinels: vec!["redis://h1:26379".into(), "redis://h2:26380".into()],
                master: "mymaster".into(),
                node: "redis://sentinel-primary/0".into(),
            })
        );
        assert_eq!(
            RedisTarget::parse(
                "redis+sentinel://u:pw@h1:26379/mymaster/3?sentinel_password=s&protocol=3"
            )
            .unwrap(),
            RedisTarget::Sentinel(SentinelTarget {
                sentinels: vec!["redis://:s@h1:26379".into()],
                master: "mymaster".into(),
                node: "redis://u:pw@sentinel-primary/3?protocol=3".into(),
            })
        );
        assert_eq!(
            RedisTarget::parse(
                "redis+sentinel://h1:26379/m?sentinel_username=su&sentinel_password=sp"
            )
            .unwrap(),
            RedisTarget::Sentinel(SentinelTarget {
                sentinels: vec!["redis://su:sp@h1:26379".into()],
                master: "m".into(),
                node: "redis://sentinel-primary/0".into(),
            })
        );
    }

    #[test]
    fn a_bad_sentinel_url_is_refused() {
        for url in [
            "redis+sentinel://h1:26379",
            "redis+sentinel://h1:26379/",
            "redis+sentinel:///mymaster",
            "redis+sentinel://h1:26379/m/x",
            "redis+sentinel://h1:26379/m/1/2",
            "rediss+sentinel://h1:26379/m",
        ] {
            assert!(RedisTarget::parse(url).is_err(), "{url} was accepted");
        }
    }

    #[test]
    fn a_cluster_url_without_seeds_is_refused() {
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        assert!(RedisTarget::parse("redis+cluster://,").is_err());
    }
}
