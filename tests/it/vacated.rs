//! `project.vacated` (issue 27): a project watched before is told once nobody has
//! watched it, over every hub, for `--webhook-vacated-after`: once per vacancy however
//! many hubs scan, never while someone still watches on any hub, again after a watcher
//! came back and left, and also when the last watcher's hub died (its presence ran out).

use std::time::Duration;

use progress_hub::webhook::EventType;
use progress_hub::wire::ProjectId;
use serde_json::Value;

use crate::support::HubConfig;
use crate::support::receiver::{Got, Receiver};
use crate::support::{Backend, TestHub, WsClient, cli, eventually};
use crate::webhooks::webhooks_to;

const GRACE: Duration = Duration::from_millis(600);

/// Webhooks to `receiver` for vacancies only, after [`GRACE`].
fn vacancies_to(receiver: &Receiver) -> impl FnOnce(&mut HubConfig) + use<> {
    let mut webhooks = webhooks_to(receiver);
    webhooks.events = vec![EventType::ProjectVacated];
    webhooks.vacated_after = GRACE;
    move |c: &mut HubConfig| {
        c.webhooks = Some(webhooks);
        c.presence_ttl = Duration::from_secs(1);
    }
}

/// The vacancies the receiver got for `project`.
fn vacancies(got: &[Got], project: &str) -> Vec<Value> {
    got.iter()
        .filter(|g| g.body["type"] == "project.vacated" && g.body["data"]["project_id"] == project)
        .map(|g| g.body.clone())
        .collect()
}

/// Nothing told of `project` through three graces: someone still watches it.
async fn none_told_while_watched(receiver: &Receiver, project: &str) {
    tokio::time::sleep(GRACE * 3).await;
    let got = receiver.got();
    assert!(vacancies(&got, project).is_empty(), "{project}: {got:#?}");
}

/// Waits until the receiver got `n` vacancies of `project`.
async fn until_vacancies(receiver: &Receiver, project: &str, n: usize) -> Vec<Got> {
    receiver
        .until("the vacancies", |got| vacancies(got, project).len() >= n)
        .await
}

/// Waits until `hub` counts `n` watchers of `project` (over every hub).
async fn watched_by(hub: &TestHub, project: &str, n: u64) {
    eventually("the watchers counted", || async {
        hub.project_state(project).await["watchers"] == n
    })
    .await;
}

on_both_brokers!(a_vacancy_is_told_after_the_grace_and_again_after_a_rejoin);

async fn a_vacancy_is_told_after_the_grace_and_again_after_a_rejoin(backend: Backend) {
    let receiver = Receiver::start().await;
    let hub = TestHub::start_with(backend, vacancies_to(&receiver)).await;
    hub.publish("seen", crate::support::progress(30)).await;
    let watcher = WsClient::connected(&hub.ws_url("seen")).await;
    watched_by(&hub, "seen", 1).await;
    // Watched through several graces: nothing told.
    none_told_while_watched(&receiver, "seen").await;
    watcher.close().await;
    let left = tokio::time::Instant::now();
    let got = until_vacancies(&receiver, "seen", 1).await;
    assert!(left.elapsed() >= GRACE, "told after {:?}", left.elapsed());
    let told = &vacancies(&got, "seen")[0];
    assert!(got.iter().all(|g| g.signed));
    assert_eq!(told["data"]["watchers"], 0, "{told}");
    assert_eq!(
        told["data"]["progress"], 30,
        "the state comes along: {told}"
    );
    assert!(
        told["data"]["since"].as_str().unwrap().ends_with('Z'),
        "{told}"
    );
    assert!(told["timestamp"].as_str().unwrap() >= told["data"]["since"].as_str().unwrap());
    let schema = crate::webhooks::webhook_schema(&hub).await;
    let errors: Vec<String> = schema.iter_errors(told).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{told}: {errors:?}");
    // Vacant for many more scans: still told once.
    tokio::time::sleep(GRACE * 3).await;
    assert_eq!(vacancies(&receiver.got(), "seen").len(), 1);
    // A watcher comes back and leaves: a new vacancy, told once more.
    let back = WsClient::connected(&hub.ws_url("seen")).await;
    watched_by(&hub, "seen", 1).await;
    back.close().await;
    until_vacancies(&receiver, "seen", 2).await;
    tokio::time::sleep(GRACE * 3).await;
    assert_eq!(vacancies(&receiver.got(), "seen").len(), 2);
    // Watched before anything was published: told too, with no state.
    let early = WsClient::connected(&hub.ws_url("bare")).await;
    if let Some(redis) = &hub.redis {
        // Its hub wrote the watcher (a join and leave between two writes is none).
        let conn = redis.connection().await;
        let key = crate::support::layout::watchers_key(&ProjectId::parse("bare").unwrap());
        eventually("the bare project's watcher written", || {
            let (mut conn, key) = (conn.clone(), key.clone());
            async move {
                let n: i64 = redis::cmd("EXISTS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                n == 1
            }
        })
        .await;
    }
    early.close().await;
    let got = until_vacancies(&receiver, "bare", 1).await;
    let bare = &vacancies(&got, "bare")[0];
    assert_eq!(bare["data"]["watchers"], 0, "{bare}");
    let errors: Vec<String> = schema.iter_errors(bare).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{bare}: {errors:?}");
    // A project nobody ever watched is never vacated.
    hub.publish("unseen", crate::support::progress(1)).await;
    tokio::time::sleep(GRACE * 2).await;
    assert!(vacancies(&receiver.got(), "unseen").is_empty());
}

// Two hubs scanning one Redis, watchers on both, and a third hub (no webhooks) SIGKILLed
// holding the last watcher of another project: each vacancy told exactly once, none
// while a watcher is left on any hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_tell_each_vacancy_once_also_when_the_last_hub_died() {
    let receiver = Receiver::start().await;
    let one = TestHub::start_with(Backend::Redis, vacancies_to(&receiver)).await;
    let two = TestHub::start_on(one.redis().url(), vacancies_to(&receiver)).await;
    one.publish("shared", crate::support::progress(10)).await;
    one.publish("doomed", crate::support::progress(20)).await;

    let on_one = WsClient::connected(&one.ws_url("shared")).await;
    let on_two = WsClient::connected(&two.ws_url("shared")).await;
    watched_by(&one, "shared", 2).await;
    on_one.close().await;
    watched_by(&two, "shared", 1).await;
    none_told_while_watched(&receiver, "shared").await;
    on_two.close().await;
    until_vacancies(&receiver, "shared", 1).await;

    // The last watcher of "doomed" is on a hub that is SIGKILLed: its presence runs out
    // (1 s), then the grace.
    let url = one.redis().url();
    let (killed, base, _) = cli::serve(&["--redis-url", &url, "--presence-ttl", "1s"], &[]);
    let mut killed = cli::Killed(killed);
    let ws = format!(
        "{}/api/v1/projects/doomed/progress",
        base.replacen("http", "ws", 1)
    );
    let _doomed_there = WsClient::connected(&ws).await;
    let doomed_here = WsClient::connected(&one.ws_url("doomed")).await;
    watched_by(&one, "doomed", 2).await;
    doomed_here.close().await;
    watched_by(&two, "doomed", 1).await;
    none_told_while_watched(&receiver, "doomed").await;
    killed.0.kill().expect("SIGKILL");
    killed.0.wait().expect("reaped");
    until_vacancies(&receiver, "doomed", 1).await;
    // Both hubs kept scanning: still once each.
    tokio::time::sleep(GRACE * 4).await;
    let got = receiver.got();
    assert_eq!(vacancies(&got, "shared").len(), 1, "{got:#?}");
    assert_eq!(vacancies(&got, "doomed").len(), 1, "{got:#?}");
    assert_eq!(got.len(), 2, "{got:#?}");
}
