//! Who may publish and subscribe to what on NATS: the one source of truth for each service's
//! grants.
//!
//! The NATS users in `k8s/base/nats.yaml` are generated from here (a test fails when the file
//! and this module disagree), the end-to-end suite runs every service under exactly these
//! grants, and docs/operations.md prints the grants a tool in any language needs with the same
//! functions. So a grant is added here or nowhere, and a missing grant fails a test.
//!
//! Least privilege, concretely:
//! - No service may use the JetStream API at large (`$JS.API.>`): each gets the API calls of its
//!   own streams, buckets and consumers only. Nobody may delete a stream, create one on
//!   `voice.call.*.in` (a recorder of every caller), or read the events stream directly except
//!   through its own durable consumer (the persister's, the notifier's, an outside service's).
//! - An outside service ([`Role::Outside`]) reads call events through durable consumers named
//!   after its user, and nothing else: no core subscription, no publishing, no other consumer.
//! - Each service receives replies only on its own inbox prefix ([`inbox_prefix`]), so no
//!   service can read another's request replies (tool results, KV values).
//! - A tool user may serve and register only its own tools, and keep results only under its own
//!   keys of the results bucket.
//! - What NATS cannot express per call (a worker sending `Transfer` for a call it does not own)
//!   is checked by the receiver: the gateway only transfers to an agent's `transfer_to`.

use std::fmt::Write as _;

use crate::subject::{CALLS_BUCKET, Subjects};
use crate::{
    DIALER_CONSUMER, EVENTS_STREAM, NOTIFIER_CONSUMER, PERSISTER_CONSUMER, TOOL_RESULTS_BUCKET,
    TOOLS_BUCKET,
};

/// The JetStream API prefix.
const JS_API: &str = "$JS.API";

/// A service's NATS user and what it is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    /// Twilio's edge.
    Gateway,
    /// The call actors.
    CallWorker,
    /// A tool service serving exactly these tools (in any language).
    Tools {
        /// The NATS user name, e.g. `tool-worker`.
        user: &'a str,
        /// The tools it serves.
        tools: &'a [&'a str],
    },
    /// The event store and console.
    Persister,
    /// The webhook notifier: its own durable consumer on the events stream, nothing else.
    Notifier,
    /// The campaign dialer: its own durable consumer on the events stream (the `status` and
    /// `amd` events of its calls), nothing else. It talks to Twilio over HTTPS, not NATS.
    Dialer,
    /// A service outside Switchboard following call events, read-only: durable consumers on
    /// the events stream named after its user (`<user>`, or `<user>` as the name with a filter
    /// subject), and nothing else.
    Outside {
        /// The NATS user name, which is also the name of its durable consumer.
        user: &'a str,
    },
}

/// The example tools the `tool-worker` binary serves.
pub const EXAMPLE_TOOLS: [&str; 3] = ["lookup_customer", "check_availability", "book_appointment"];

/// The outside subscriber Switchboard ships a user for (the example CRM sync); each further
/// outside team gets a user of its own the same way.
pub const OUTSIDE: Role<'static> = Role::Outside { user: "outside" };

/// The `tool-worker` binary's role.
pub const TOOL_WORKER: Role<'static> = Role::Tools {
    user: "tool-worker",
    tools: &EXAMPLE_TOOLS,
};

impl Role<'_> {
    /// The NATS user name.
    pub fn user(&self) -> &str {
        match self {
            Role::Gateway => "gateway",
            Role::CallWorker => "call-worker",
            Role::Tools { user, .. } => user,
            Role::Persister => "persister",
            Role::Notifier => "notifier",
            Role::Dialer => "dialer",
            Role::Outside { user } => user,
        }
    }

    /// What the user may publish and subscribe to, for subjects under `subjects`' prefix.
    pub fn grants(&self, subjects: &Subjects) -> Grants {
        let mut grants = self.grants_listed(subjects);
        dedup(&mut grants.publish);
        dedup(&mut grants.subscribe);
        grants
    }

    fn grants_listed(&self, subjects: &Subjects) -> Grants {
        let inbox = format!("{}.>", inbox_prefix(self.user()));
        let p = subjects.prefix();
        let events_stream = stream_api(EVENTS_STREAM);
        match self {
            Role::Gateway => Grants {
                publish: [
                    vec![
                        subjects.offer(),
                        subjects.takeover(),
                        format!("{p}.call.*.in"),
                        // Probes of a silent call owner.
                        format!("{p}.call.*.owner"),
                        subjects.all_events(),
                    ],
                    events_stream,
                    // The last `owner` event of a call (a re-attach token is bound to its
                    // epoch; the gateway's fencing claim of a lost call follows it): a direct
                    // get by last subject, on `owner` subjects only (the rest of the call log
                    // stays unreadable).
                    vec![format!(
                        "{JS_API}.DIRECT.GET.{EVENTS_STREAM}.{}",
                        subjects.event("*", "owner")
                    )],
                    // Offer and stream-token claims, shared by every gateway replica.
                    kv_bucket_api(CALLS_BUCKET),
                    // Its own bucket's replicas, brought in line when NATS_REPLICAS changes.
                    vec![stream_update(&format!("KV_{CALLS_BUCKET}"))],
                    vec![kv_key(CALLS_BUCKET, ">")],
                    kv_read(CALLS_BUCKET, ">"),
                ]
                .concat(),
                subscribe: vec![format!("{p}.call.*.out"), inbox],
                allow_responses: false,
            },
            Role::CallWorker => Grants {
                publish: [
                    vec![
                        format!("{p}.call.*.out"),
                        format!("{p}.tools.*"),
                        subjects.all_events(),
                    ],
                    events_stream,
                    // Reading a call's events back: the whole call for a takeover (message by
                    // message, no consumer to grant), and its last ownership claim (a direct
                    // get, as gateways read it).
                    vec![
                        format!("{JS_API}.STREAM.MSG.GET.{EVENTS_STREAM}"),
                        format!(
                            "{JS_API}.DIRECT.GET.{EVENTS_STREAM}.{}",
                            subjects.event("*", "owner")
                        ),
                    ],
                    registry_api(),
                    kv_watch(TOOLS_BUCKET),
                ]
                .concat(),
                // `.owner`: the gateway's probes of the call's owner.
                subscribe: vec![
                    subjects.offer(),
                    subjects.takeover(),
                    format!("{p}.call.*.in"),
                    format!("{p}.call.*.owner"),
                    inbox,
                ],
                allow_responses: true,
            },
            Role::Tools { tools, .. } => {
                // The registry is read whole (a stopping replica lists the heartbeats to see
                // whether others still serve its tool; specs are not secret), but a tool writes
                // only its own spec and heartbeats, and its own results.
                let mut publish = [
                    registry_api(),
                    kv_watch(TOOLS_BUCKET),
                    vec![
                        format!("{JS_API}.CONSUMER.CREATE.KV_{TOOLS_BUCKET}"),
                        format!("{JS_API}.CONSUMER.INFO.KV_{TOOLS_BUCKET}.>"),
                    ],
                    kv_bucket_api(TOOL_RESULTS_BUCKET),
                    vec![stream_update(&format!("KV_{TOOL_RESULTS_BUCKET}"))],
                ]
                .concat();
                let mut subscribe = Vec::new();
                for tool in *tools {
                    subscribe.push(subjects.tool(tool));
                    publish.push(kv_key(TOOLS_BUCKET, tool));
                    publish.push(kv_key(TOOLS_BUCKET, &format!("{tool}.>")));
                    publish.push(kv_key(TOOL_RESULTS_BUCKET, &format!("{tool}.>")));
                    publish.extend(kv_read(TOOL_RESULTS_BUCKET, &format!("{tool}.>")));
                }
                subscribe.push(inbox);
                Grants {
                    publish,
                    subscribe,
                    allow_responses: true,
                }
            }
            Role::Persister => Grants {
                publish: [
                    events_stream,
                    // The keeper of the record is the one service that may change the stream's
                    // settings (replicas, ages) in place; the others create it or use it as is.
                    vec![stream_update(EVENTS_STREAM)],
                    consumer_api(EVENTS_STREAM, PERSISTER_CONSUMER),
                    vec![format!("$JS.ACK.{EVENTS_STREAM}.{PERSISTER_CONSUMER}.>")],
                ]
                .concat(),
                // The live view follows calls as they happen, straight from the subjects.
                subscribe: vec![subjects.all_events(), inbox],
                allow_responses: false,
            },
            Role::Notifier => Grants {
                publish: [
                    events_stream,
                    consumer_api(EVENTS_STREAM, NOTIFIER_CONSUMER),
                    vec![format!("$JS.ACK.{EVENTS_STREAM}.{NOTIFIER_CONSUMER}.>")],
                ]
                .concat(),
                subscribe: vec![inbox],
                allow_responses: false,
            },
            Role::Dialer => Grants {
                publish: [
                    events_stream,
                    consumer_api(EVENTS_STREAM, DIALER_CONSUMER),
                    vec![format!("$JS.ACK.{EVENTS_STREAM}.{DIALER_CONSUMER}.>")],
                ]
                .concat(),
                subscribe: vec![inbox],
                allow_responses: false,
            },
            Role::Outside { user } => Grants {
                // Read-only: the stream's info, its own consumer, acks of its own messages.
                publish: [
                    vec![format!("{JS_API}.STREAM.INFO.{EVENTS_STREAM}")],
                    consumer_api(EVENTS_STREAM, user),
                    vec![
                        format!("{JS_API}.CONSUMER.DELETE.{EVENTS_STREAM}.{user}"),
                        format!("$JS.ACK.{EVENTS_STREAM}.{user}.>"),
                    ],
                ]
                .concat(),
                subscribe: vec![inbox],
                allow_responses: false,
            },
        }
    }
}

/// Drops repeated subjects, keeping the first of each.
fn dedup(subjects: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    subjects.retain(|s| seen.insert(s.clone()));
}

/// The inbox prefix of a service connecting as `user`: replies to its requests (and JetStream
/// acks and API answers) arrive under it, and it may subscribe to nothing else of `_INBOX`.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// Subjects a user may publish to and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May answer requests (publish to the reply subject of a message it received).
    pub allow_responses: bool,
}

/// Look up and create a stream (services create what they use at start, in any order).
fn stream_api(stream: &str) -> Vec<String> {
    vec![
        format!("{JS_API}.STREAM.INFO.{stream}"),
        format!("{JS_API}.STREAM.CREATE.{stream}"),
    ]
}

/// Change a stream's settings in place (replicas, ages), keeping its messages.
fn stream_update(stream: &str) -> String {
    format!("{JS_API}.STREAM.UPDATE.{stream}")
}

/// Look up and create a KV bucket (creating one reads the account's JetStream limits first).
fn kv_bucket_api(bucket: &str) -> Vec<String> {
    [
        vec![format!("{JS_API}.INFO")],
        stream_api(&format!("KV_{bucket}")),
    ]
    .concat()
}

/// The tool registry bucket as every process opens it (service-kit's `tool_registry`): look it
/// up, create it, bring older settings in line, list stream names, read any entry.
fn registry_api() -> Vec<String> {
    let stream = format!("KV_{TOOLS_BUCKET}");
    [
        kv_bucket_api(TOOLS_BUCKET),
        vec![
            stream_update(&stream),
            format!("{JS_API}.STREAM.NAMES"),
            format!("{JS_API}.STREAM.MSG.GET.{stream}"),
        ],
        kv_read(TOOLS_BUCKET, ">"),
    ]
    .concat()
}

/// Read keys matching `keys` of a bucket (direct get).
fn kv_read(bucket: &str, keys: &str) -> Vec<String> {
    vec![format!(
        "{JS_API}.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{keys}"
    )]
}

/// Watch a whole bucket: an ordered consumer with flow control, recreated after a gap.
fn kv_watch(bucket: &str) -> Vec<String> {
    let stream = format!("KV_{bucket}");
    vec![
        format!("{JS_API}.CONSUMER.CREATE.{stream}.>"),
        format!("{JS_API}.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// Write one key (or key pattern) of a bucket.
fn kv_key(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// Create, look up and pull from one durable consumer.
fn consumer_api(stream: &str, consumer: &str) -> Vec<String> {
    vec![
        format!("{JS_API}.CONSUMER.CREATE.{stream}.{consumer}"),
        format!("{JS_API}.CONSUMER.CREATE.{stream}.{consumer}.>"),
        format!("{JS_API}.CONSUMER.INFO.{stream}.{consumer}"),
        format!("{JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
    ]
}

/// One user of the `authorization` block.
#[derive(Debug, Clone)]
pub struct User<'a> {
    /// The NATS user name: the role's, or the role's with [`NEXT_USER_SUFFIX`].
    pub name: String,
    pub role: Role<'a>,
    /// The password as written in the server config: a `$VARIABLE` the server resolves from
    /// its environment, or a quoted literal (tests).
    pub password: String,
}

/// The nats-server `authorization { users: [...] }` block for `users`, indented by `indent`
/// spaces: what k8s/base/nats.yaml holds and what the tests start nats-server with.
pub fn authorization_block(users: &[User<'_>], subjects: &Subjects, indent: usize) -> String {
    let pad = " ".repeat(indent);
    // One subject a line, so the block stays readable (and within a YAML linter's line length).
    let list = |out: &mut String, key: &str, items: &[String]| {
        let _ = writeln!(out, "{pad}        {key}: {{");
        let _ = writeln!(out, "{pad}          allow: [");
        let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
        let _ = writeln!(
            out,
            "{pad}            {}",
            quoted.join(&format!(",\n{pad}            "))
        );
        let _ = writeln!(out, "{pad}          ]");
        let _ = writeln!(out, "{pad}        }}");
    };
    let mut out = String::new();
    let _ = writeln!(out, "{pad}authorization {{");
    let _ = writeln!(out, "{pad}  users: [");
    for user in users {
        let grants = user.role.grants(subjects);
        let _ = writeln!(out, "{pad}    {{");
        let _ = writeln!(out, "{pad}      user: \"{}\"", user.name);
        let _ = writeln!(out, "{pad}      password: {}", user.password);
        let _ = writeln!(out, "{pad}      permissions: {{");
        list(&mut out, "publish", &grants.publish);
        list(&mut out, "subscribe", &grants.subscribe);
        if grants.allow_responses {
            let _ = writeln!(out, "{pad}        allow_responses: true");
        }
        let _ = writeln!(out, "{pad}      }}");
        let _ = writeln!(out, "{pad}    }}");
    }
    let _ = writeln!(out, "{pad}  ]");
    let _ = writeln!(out, "{pad}}}");
    out
}

/// The second user of each role, with the same grants: NATS holds one password per user, so a
/// password is rotated by moving a service from one of its two users to the other (see
/// docs/operations.md, "Rotating credentials"), never by changing the password it is using.
pub const NEXT_USER_SUFFIX: &str = "-next";

/// Every service Switchboard ships, by role.
pub const SHIPPED_ROLES: [Role<'static>; 7] = [
    Role::Gateway,
    Role::CallWorker,
    TOOL_WORKER,
    Role::Persister,
    Role::Notifier,
    Role::Dialer,
    OUTSIDE,
];

/// A role's two users (the role's name and the same with [`NEXT_USER_SUFFIX`]), each with the
/// password variable `$<USER>_PASSWORD` that the server resolves from its environment.
pub fn user_pair(role: Role<'_>) -> [User<'_>; 2] {
    ["", NEXT_USER_SUFFIX].map(|suffix| {
        let name = format!("{}{suffix}", role.user());
        User {
            password: format!("${}_PASSWORD", name.to_uppercase().replace('-', "_")),
            name,
            role,
        }
    })
}

/// The services Switchboard ships, two users each ([`user_pair`]): what k8s/base/nats.yaml
/// holds.
pub fn shipped_users() -> Vec<User<'static>> {
    SHIPPED_ROLES.into_iter().flat_map(user_pair).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(role: Role<'_>) -> Vec<String> {
        let g = role.grants(&Subjects::default());
        [g.publish, g.subscribe].concat()
    }

    #[test]
    fn nobody_gets_the_whole_jetstream_api_or_every_inbox() {
        for role in SHIPPED_ROLES {
            for grant in all(role) {
                assert!(!grant.starts_with("$JS.API.>"), "{role:?}: {grant}");
                assert!(!grant.contains("STREAM.DELETE"), "{role:?}: {grant}");
                // Reading messages by subject is not scoped by the API subject: never on the
                // call log or the tools' results. Call-workers alone read the call log, since
                // any of them may have to take any call over (message by message: no consumer,
                // so nobody else's deliveries).
                if role != Role::CallWorker {
                    assert!(!grant.contains("MSG.GET.VOICE_EVENTS"), "{role:?}: {grant}");
                }
                assert!(
                    !grant.contains("MSG.GET.KV_voice-tool-results"),
                    "{role:?}: {grant}"
                );
                assert!(!grant.starts_with("_INBOX."), "{role:?}: {grant}");
                assert_ne!(grant, ">", "{role:?}");
            }
        }
    }

    #[test]
    fn tools_are_confined_to_their_own_subjects_and_keys() {
        let role = Role::Tools {
            user: "tool-order-status",
            tools: &["order_status"],
        };
        let grants = role.grants(&Subjects::default());
        assert!(
            grants
                .subscribe
                .contains(&"voice.tools.order_status".to_owned())
        );
        assert!(
            grants
                .publish
                .contains(&"$KV.voice-tools.order_status".to_owned())
        );
        for grant in all(role) {
            assert!(!grant.contains("lookup_customer"), "{grant}");
            assert!(!grant.ends_with("voice.tools.>"), "{grant}");
            assert_ne!(grant, "$KV.voice-tools.>");
            assert_ne!(grant, "$KV.voice-tool-results.>");
        }
        assert!(
            grants
                .subscribe
                .contains(&"_INBOX_tool-order-status.>".to_owned())
        );
    }

    #[test]
    fn outside_services_only_read_through_their_own_consumer() {
        let grants = Role::Outside { user: "crm-sync" }.grants(&Subjects::default());
        assert_eq!(grants.subscribe, ["_INBOX_crm-sync.>"]);
        assert!(!grants.allow_responses);
        for grant in &grants.publish {
            assert!(
                grant.starts_with("$JS.API.STREAM.INFO.VOICE_EVENTS")
                    || grant.contains(".VOICE_EVENTS.crm-sync"),
                "{grant}"
            );
            assert!(!grant.contains("STREAM.CREATE"), "{grant}");
        }
    }

    #[test]
    fn the_block_is_nats_server_config() {
        let users = shipped_users();
        let block = authorization_block(&users, &Subjects::default(), 4);
        assert!(block.starts_with("    authorization {\n"));
        assert!(block.contains("password: $CALL_WORKER_PASSWORD"));
        assert!(block.contains("user: \"call-worker-next\""));
        assert!(block.contains("password: $CALL_WORKER_NEXT_PASSWORD"));
        assert!(block.contains("user: \"tool-worker\""));
        assert_eq!(block.matches("allow_responses: true").count(), 4);
    }
}
