//! A session-based backend asking a stateless (2026-07-28) client something mid-call
//! (`sampling/createMessage`, `elicitation/create`, `roots/list`): the stateless client cannot
//! take a server-to-client request, so the gateway answers its call with an `input_required`
//! result (multi round-trip requests) and keeps the backend call waiting — *parked* — in a task
//! of its own. The client's retry carries `inputResponses` and the gateway's `requestState`;
//! the gateway hands the answers to the backend and answers the retry with what the backend
//! does next: its result, or another round of questions.
//!
//! The `requestState` is sealed (src/seal.rs) and binds the round to the caller's subject, the
//! method and name of the call, and an expiry, as the MRTR pattern asks; it names the parked
//! call and the replica holding it. A retry that reaches another replica (`[cluster]`, any load
//! balancer) is passed to that replica over the bus and its round's outcome comes back the same
//! way; that needs `secret_file`, so that every replica opens what another sealed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::relay::refuse;
use crate::backend::{BackendError, Event, Reply};
use crate::cluster::{BridgeRound, BusMessage, Cluster};
use crate::error::Refusal;
use crate::method::ServerRequest;
use crate::seal::Sealer;

/// What a `requestState` is sealed for: nothing else the gateway seals opens as one.
const PURPOSE: &str = "mrtr";

/// How long a backend answer that came while no retry was waiting is kept for the next retry.
const KEEP_FINISHED: Duration = Duration::from_secs(30);

/// How long a retry relayed to another replica waits for its round beyond the backend's timeout.
const REMOTE_MARGIN: Duration = Duration::from_secs(2);

/// The most questions one round puts to the client: a backend asking more at once is refused
/// beyond it (each is an outstanding request the client must answer).
const MAX_ASKED: usize = 16;

/// The parked calls of this replica, and the rounds it asked another replica to run.
pub(super) struct Bridges {
    sealer: Arc<Sealer>,
    parked: Mutex<HashMap<Uuid, mpsc::Sender<Resume>>>,
    tickets: Mutex<HashMap<Uuid, oneshot::Sender<BridgeRound>>>,
}

/// A retry's answers, for the parked call.
struct Resume {
    responses: IndexMap<String, Box<RawValue>>,
    round: oneshot::Sender<BridgeRound>,
}

/// What a round is bound to: only the same caller, retrying the same call, may continue it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Binding {
    pub subject: Option<String>,
    pub method: String,
    pub name: String,
}

/// The sealed content of a `requestState`.
#[derive(Serialize, Deserialize)]
struct State {
    bridge: Uuid,
    replica: String,
    #[serde(flatten)]
    binding: Binding,
    /// ms since the Unix epoch.
    expires_ms: u64,
}

/// A parked call's state between rounds.
struct Life {
    id: Uuid,
    parked: Parked,
    /// The questions of the round the client is answering, by key, with where each answer goes.
    waiting: Vec<(String, oneshot::Sender<Reply>)>,
    /// Numbers the questions (keys are unique within the call).
    seq: u64,
}

/// A question the backend asked, as the client will see it in `inputRequests`.
pub(super) struct Asked {
    pub method: String,
    pub params: Option<Box<RawValue>>,
    pub reply: oneshot::Sender<Reply>,
}

/// A parked call: the backend call under way and what it sends meanwhile.
pub(super) struct Parked {
    pub pending: BoxFuture<'static, Result<Reply, BackendError>>,
    pub events: mpsc::UnboundedReceiver<Event>,
    /// The client's declared capabilities (its first request's `_meta`): a later question it
    /// cannot take is refused to the backend, never asked.
    pub capabilities: serde_json::Value,
    pub binding: Binding,
    /// The backend's call timeout: how long a round's state stays good.
    pub timeout: Duration,
    /// The backend's configured `roots/list` answer, for a client that cannot list its own.
    pub roots: Arc<str>,
    /// Raised while the call waits for the client's answers (`CallOpts::parked`).
    pub waiting: Arc<AtomicBool>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What becomes of a backend's question to a stateless client.
pub(super) enum Verdict {
    /// Put it to the client in an input round.
    Ask(Asked),
    /// Answered here: `roots/list` from the backend's configured roots, or a request no
    /// stateless client can take refused to the backend.
    Answered,
    /// The backend needs a capability the client did not declare: the backend's request is
    /// refused, and the client's call fails with -32021 naming it (as a 2026-07-28 server
    /// must answer such a call), never with whatever the backend makes of a refusal.
    Missing(&'static str),
}

/// Judges a backend's question to a stateless client with these capabilities.
pub(super) fn judge(asked: Asked, capabilities: &serde_json::Value, roots: &str) -> Verdict {
    let Ok(kind) = asked.method.parse::<ServerRequest>() else {
        refuse(asked.reply, format!("`{}` cannot be put to a client that speaks MCP 2026-07-28", asked.method));
        return Verdict::Answered;
    };
    if capabilities.get(kind.capability()).is_some() {
        return Verdict::Ask(asked);
    }
    if kind == ServerRequest::Roots {
        // A client that cannot list its roots: the backend's configured ones.
        let _ = asked.reply.send(Reply::Result(crate::backend::raw(roots.to_string())));
        return Verdict::Answered;
    }
    super::relay::refuse_undeclared(asked.reply, kind.capability());
    Verdict::Missing(kind.capability())
}

/// The error a stateless client's call ends with when its backend needs `capability`.
pub(super) fn missing_capability(capability: &str) -> Box<RawValue> {
    let e = serde_json::json!({
        "code": crate::jsonrpc::code::MISSING_CLIENT_CAPABILITY,
        "message": format!("The backend requires the client's `{capability}` capability for this request, and the client did not declare it"),
        "data": { "requiredCapabilities": { capability: {} } },
    });
    crate::backend::raw(e.to_string())
}

impl Bridges {
    pub(super) fn new(sealer: Arc<Sealer>) -> Bridges {
        Bridges { sealer, parked: Mutex::new(HashMap::new()), tickets: Mutex::new(HashMap::new()) }
    }

    /// Parks a call whose backend asked `first` (plus any question already queued behind it)
    /// and returns the `input_required` result that puts them to the client. The parked call
    /// lives in a task owned by `tasks` until the backend answers a retry, its own timeout
    /// ends it, or no retry comes.
    pub(super) fn park(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        parked: Parked,
        first: Asked,
    ) -> String {
        parked.waiting.store(true, Ordering::Relaxed);
        let mut life = Life { id: Uuid::new_v4(), parked, waiting: Vec::new(), seq: 0 };
        let result = self.ask(&mut life, first);
        let (tx, rx) = mpsc::channel(1);
        self.parked.lock().expect("bridges lock").insert(life.id, tx);
        let bridges = self.clone();
        tasks.spawn(async move {
            let id = life.id;
            bridges.run(life, rx).await;
            bridges.parked.lock().expect("bridges lock").remove(&id);
        });
        result
    }

    /// Puts `first`, and the questions already queued behind it, to the client: the round's
    /// `input_required` result. Notifications among them are dropped: the client's call that
    /// had a stream has been answered.
    fn ask(&self, life: &mut Life, first: Asked) -> String {
        #[derive(Serialize)]
        struct Question {
            method: String,
            params: Box<RawValue>,
        }
        #[derive(Serialize)]
        struct InputRequired {
            #[serde(rename = "resultType")]
            result_type: &'static str,
            #[serde(rename = "inputRequests")]
            input_requests: IndexMap<String, Question>,
            #[serde(rename = "requestState")]
            request_state: String,
        }
        let mut asked = vec![first];
        while let Ok(ev) = life.parked.events.try_recv() {
            if let Event::Request { method, params, reply } = ev {
                // A question behind one already asked that the client cannot take is refused
                // to the backend alone: the round's questions still go out.
                if let Verdict::Ask(a) =
                    judge(Asked { method, params, reply }, &life.parked.capabilities, &life.parked.roots)
                {
                    if asked.len() < MAX_ASKED {
                        asked.push(a);
                    } else {
                        refuse(a.reply, format!("more than {MAX_ASKED} questions at once"));
                    }
                }
            }
        }
        let mut questions = IndexMap::new();
        for a in asked {
            life.seq += 1;
            let key = format!("sentinel-{}", life.seq);
            let params = a.params.unwrap_or_else(|| crate::backend::raw("{}".into()));
            questions.insert(key.clone(), Question { method: a.method, params });
            life.waiting.push((key, a.reply));
        }
        let state = State {
            bridge: life.id,
            replica: crate::replica::id().to_string(),
            binding: life.parked.binding.clone(),
            expires_ms: now_ms().saturating_add(u64::try_from(life.parked.timeout.as_millis()).unwrap_or(u64::MAX)),
        };
        let request_state = self.sealer.seal(PURPOSE, &serde_json::to_vec(&state).expect("a state serializes"));
        let result = InputRequired { result_type: "input_required", input_requests: questions, request_state };
        serde_json::to_string(&result).expect("a round serializes")
    }

    /// The parked call's life: each retry's answers go to the backend, and the retry gets what
    /// the backend does next.
    async fn run(&self, mut life: Life, mut resumes: mpsc::Receiver<Resume>) {
        let mut finished: Option<Result<Reply, BackendError>> = None;
        loop {
            // Wait for the retry; the backend call may end meanwhile (its timeout, a crash).
            let resume = tokio::select! {
                r = resumes.recv() => match r { Some(r) => r, None => return },
                r = &mut life.parked.pending, if finished.is_none() => { finished = Some(r); continue }
                () = tokio::time::sleep(KEEP_FINISHED), if finished.is_some() => return,
            };
            let Resume { mut responses, mut round } = resume;
            life.parked.waiting.store(false, Ordering::Relaxed);
            // The client answers by key; a question left unanswered is refused to the backend.
            for (key, reply) in life.waiting.drain(..) {
                match responses.shift_remove(&key) {
                    Some(r) => {
                        let _ = reply.send(Reply::Result(r));
                    }
                    None => refuse(reply, format!("the client did not answer `{key}`")),
                }
            }
            if let Some(done) = finished.take() {
                let _ = round.send(to_round(done).await);
                return;
            }
            // Run the call on until it answers or asks again.
            loop {
                tokio::select! {
                    r = &mut life.parked.pending => {
                        let _ = round.send(to_round(r).await);
                        return;
                    }
                    Some(ev) = life.parked.events.recv() => {
                        // Notifications of a parked call have no stream to go to.
                        let Event::Request { method, params, reply } = ev else { continue };
                        match judge(Asked { method, params, reply }, &life.parked.capabilities, &life.parked.roots) {
                            Verdict::Ask(asked) => {
                                life.parked.waiting.store(true, Ordering::Relaxed);
                                let result = self.ask(&mut life, asked);
                                let _ = round.send(BridgeRound::Result(crate::backend::raw(result)));
                                break;
                            }
                            Verdict::Answered => {}
                            Verdict::Missing(capability) => {
                                let _ = round.send(BridgeRound::Error(missing_capability(capability)));
                                return;
                            }
                        }
                    }
                    // The retry's client went away: the next retry finds the call as it is.
                    () = round.closed() => break,
                }
            }
        }
    }

    /// The round a retry continues, if its `requestState` is one of ours, still good, and bound
    /// to this caller and call.
    fn open(&self, state: &str, binding: &Binding) -> Result<State, Refusal> {
        let bad = |why: &str| {
            Refusal::InvalidParams(format!(
                "requestState {why}; call the tool again without `requestState` and `inputResponses`"
            ))
        };
        let plain = self.sealer.open(PURPOSE, state).map_err(|_| {
            bad(if self.sealer.is_shared() {
                "was not issued by this gateway"
            } else {
                "was not issued by this gateway replica (replicas behind one load balancer need the same [cluster] secret_file)"
            })
        })?;
        let state: State = serde_json::from_slice(&plain).map_err(|_| bad("is not readable"))?;
        if state.expires_ms < now_ms() {
            return Err(bad("has expired"));
        }
        if &state.binding != binding {
            return Err(bad("belongs to another caller or another call"));
        }
        Ok(state)
    }

    /// Continues a parked call with a retry's answers, here or on the replica holding it.
    pub(super) async fn resume(
        &self,
        state: &str,
        binding: &Binding,
        responses: IndexMap<String, Box<RawValue>>,
        cluster: Option<&Arc<Cluster>>,
        timeout: Duration,
    ) -> Result<BridgeRound, Refusal> {
        let state = self.open(state, binding)?;
        if state.replica == crate::replica::id() {
            return Ok(self.resume_here(state.bridge, responses, timeout).await);
        }
        let Some(cluster) = cluster else {
            return Ok(BridgeRound::Gone);
        };
        let ticket = Uuid::new_v4();
        let (tx, rx) = oneshot::channel();
        self.tickets.lock().expect("bridges lock").insert(ticket, tx);
        let message = BusMessage::Resume {
            replica: state.replica,
            bridge: state.bridge,
            ticket,
            responses: serde_json::value::to_raw_value(&responses).expect("answers serialize"),
        };
        let round = match cluster.publish(message).await {
            Ok(()) => tokio::time::timeout(timeout + REMOTE_MARGIN, rx).await.ok().and_then(Result::ok),
            Err(o) => {
                Some(BridgeRound::Unavailable(format!("the replica holding the call cannot be reached ({})", o.reason)))
            }
        };
        self.tickets.lock().expect("bridges lock").remove(&ticket);
        Ok(round.unwrap_or(BridgeRound::Timeout))
    }

    async fn resume_here(
        &self,
        bridge: Uuid,
        responses: IndexMap<String, Box<RawValue>>,
        timeout: Duration,
    ) -> BridgeRound {
        let Some(tx) = self.parked.lock().expect("bridges lock").get(&bridge).cloned() else {
            return BridgeRound::Gone;
        };
        let (round, rx) = oneshot::channel();
        if tx.send(Resume { responses, round }).await.is_err() {
            return BridgeRound::Gone;
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => BridgeRound::Gone,
            Err(_) => BridgeRound::Timeout,
        }
    }

    /// Another replica's retry of a call parked here: run its round and send the outcome back.
    pub(super) fn on_resume(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        cluster: Arc<Cluster>,
        bridge: Uuid,
        ticket: Uuid,
        responses: &RawValue,
        timeout: Duration,
    ) {
        let responses: IndexMap<String, Box<RawValue>> = serde_json::from_str(responses.get()).unwrap_or_default();
        let bridges = self.clone();
        tasks.spawn(async move {
            let round = bridges.resume_here(bridge, responses, timeout).await;
            let _ = cluster.publish(BusMessage::Resumed { ticket, round }).await;
        });
    }

    /// The outcome of a round another replica ran for a retry that reached this one.
    pub(super) fn on_resumed(&self, ticket: Uuid, round: BridgeRound) {
        if let Some(tx) = self.tickets.lock().expect("bridges lock").remove(&ticket) {
            let _ = tx.send(round);
        }
    }
}

/// The round's outcome from the backend's answer; a streamed result is read whole (a retry's
/// answer may have to cross to another replica), within the backend's limits and deadline.
async fn to_round(r: Result<Reply, BackendError>) -> BridgeRound {
    let r = match r {
        Ok(Reply::Streamed(body)) => body.collect().await.map(|(text, _)| Reply::Result(crate::backend::raw(text))),
        r => r,
    };
    match r {
        Ok(Reply::Result(r)) => BridgeRound::Result(r),
        Ok(Reply::Error(e)) => BridgeRound::Error(e),
        Ok(Reply::Streamed(_)) => unreachable!("read whole above"),
        Err(BackendError::Timeout) => BridgeRound::Timeout,
        Err(BackendError::Unavailable(why) | BackendError::Unreachable(why)) => BridgeRound::Unavailable(why),
    }
}
