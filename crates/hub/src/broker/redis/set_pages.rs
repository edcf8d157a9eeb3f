//! Reading a large set a page at a time (SSCAN), for the hubs' scans (`stall.rs`,
//! `vacancy.rs`): no one call holds Redis for long, and a scan stops at a bound (the
//! rest waits for its next round).

use super::connection::RedisConn;
use crate::broker::BrokerError;

/// The pages of one pass over a set.
pub struct SetPages {
    key: &'static str,
    /// Members asked per page (about: SSCAN's COUNT), and most read in the pass.
    page: usize,
    most: usize,
    cursor: u64,
    seen: usize,
    done: bool,
}

impl SetPages {
    pub fn new(key: &'static str, page: usize, most: usize) -> Self {
        Self {
            key,
            page,
            most,
            cursor: 0,
            seen: 0,
            done: false,
        }
    }

    /// The next page of members; `None` at the set's end or past `most` members.
    pub async fn next(&mut self, conn: &mut RedisConn) -> Result<Option<Vec<String>>, BrokerError> {
        if self.done {
            return Ok(None);
        }
        let (next, members): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(self.key)
            .arg(self.cursor)
            .arg("COUNT")
            .arg(self.page)
            .query_async(conn)
            .await?;
        self.seen += members.len();
        self.cursor = next;
        self.done = next == 0 || self.seen >= self.most;
        Ok(Some(members))
    }
}
