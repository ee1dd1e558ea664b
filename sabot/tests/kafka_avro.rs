//! Avro in the Confluent wire format against an in-process schema registry: round trips,
//! schema evolution, one fetch per id, rejected payloads, an unreachable registry, basic auth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sabot::kafka::format::{AvroFormat, Format};
use sabot::kafka::registry::SchemaRegistry;
use tiny_http::{Header, Method, Response, Server};

/// What the mock registry holds and has seen.
#[derive(Default)]
struct State {
    /// Schema texts; the id of `schemas[i]` is `i + 1`.
    schemas: Vec<String>,
    /// Subject → ids of its versions, oldest first.
    subjects: HashMap<String, Vec<u32>>,
    /// How many times `GET /schemas/ids/{id}` was asked, by id.
    id_requests: HashMap<u32, usize>,
    /// The `Authorization` header of every request.
    authorizations: Vec<Option<String>>,
}

/// A small Confluent schema registry on 127.0.0.1, served by a thread until dropped.
struct MockRegistry {
    url: String,
    /// Dropped by `stop`, which closes the listening socket.
    server: Option<Arc<Server>>,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

impl MockRegistry {
    fn start() -> MockRegistry {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind the mock registry"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let thread = {
            let (server, state) = (server.clone(), state.clone());
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    serve(request, &state);
                }
            })
        };
        MockRegistry { url: format!("http://127.0.0.1:{port}"), server: Some(server), state, thread: Some(thread) }
    }

    fn client(&self) -> SchemaRegistry {
        SchemaRegistry::new(&self.url)
    }

    fn id_requests(&self, id: u32) -> usize {
        self.state.lock().unwrap().id_requests.get(&id).copied().unwrap_or(0)
    }

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.unblock();
            if let Some(thread) = self.thread.take() {
                thread.join().expect("mock registry thread");
            }
        }
    }
}

impl Drop for MockRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut request: tiny_http::Request, state: &Mutex<State>) {
    let auth = request.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.to_string());
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    let path: Vec<String> = request.url().trim_start_matches('/').split('/').map(String::from).collect();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let (status, reply) = {
        let mut state = state.lock().unwrap();
        state.authorizations.push(auth);
        match (request.method(), path.as_slice()) {
            (Method::Get, ["schemas", "ids", id]) => {
                let id: u32 = id.parse().unwrap_or(0);
                *state.id_requests.entry(id).or_default() += 1;
                match state.schemas.get((id as usize).wrapping_sub(1)) {
                    Some(schema) => (200, serde_json::json!({ "schema": schema })),
                    None => (404, serde_json::json!({ "error_code": 40403, "message": "Schema not found" })),
                }
            }
            (Method::Get, ["subjects", subject, "versions", "latest"]) => {
                match state.subjects.get(*subject).and_then(|ids| ids.last().map(|&id| (ids.len(), id))) {
                    Some((version, id)) => (
                        200,
                        serde_json::json!({
                            "subject": subject, "version": version, "id": id,
                            "schema": state.schemas[id as usize - 1],
                        }),
                    ),
                    None => (404, serde_json::json!({ "error_code": 40401, "message": "Subject not found" })),
                }
            }
            (Method::Post, ["subjects", subject, "versions"]) => {
                let parsed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                match parsed["schema"].as_str() {
                    Some(schema) => {
                        let id = match state.schemas.iter().position(|s| s == schema) {
                            Some(i) => i as u32 + 1,
                            None => {
                                state.schemas.push(schema.to_string());
                                state.schemas.len() as u32
                            }
                        };
                        let versions = state.subjects.entry(subject.to_string()).or_default();
                        if !versions.contains(&id) {
                            versions.push(id);
                        }
                        (200, serde_json::json!({ "id": id }))
                    }
                    None => (422, serde_json::json!({ "error_code": 42201, "message": "Invalid schema" })),
                }
            }
            _ => (404, serde_json::json!({ "error_code": 404, "message": "HTTP 404 Not Found" })),
        }
    };
    let content_type = Header::from_bytes("Content-Type", "application/vnd.schemaregistry.v1+json").unwrap();
    let _ =
        request.respond(Response::from_string(reply.to_string()).with_status_code(status).with_header(content_type));
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("count", DataType::Int64, false),
        Field::new("price", DataType::Float64, false),
        Field::new("active", DataType::Boolean, false),
        Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())), true),
    ]))
}

fn batch(first: i64, rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows as i64).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids.iter().map(|i| (i % 3 != 0).then(|| format!("name {i}"))).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Float64Array::from(ids.iter().map(|&i| i as f64 * 1.25).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(ids.iter().map(|i| i % 2 == 0).collect::<Vec<_>>())),
        Arc::new(
            TimestampMillisecondArray::from(
                ids.iter().map(|&i| (i != 2).then_some(1_700_000_000_000 + i)).collect::<Vec<_>>(),
            )
            .with_timezone("+00:00"),
        ),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn encode(format: &AvroFormat, batch: &RecordBatch) -> Vec<Vec<u8>> {
    let messages = format.encoder(batch.schema()).unwrap().encode(batch).unwrap();
    assert_eq!(messages.len(), batch.num_rows());
    for (row, message) in messages.iter().enumerate() {
        assert_eq!((message.first_row, message.rows), (row, 1));
    }
    messages.into_iter().map(|m| m.payload).collect()
}

fn slices(payloads: &[Vec<u8>]) -> Vec<&[u8]> {
    payloads.iter().map(Vec::as_slice).collect()
}

#[test]
fn round_trip_through_the_registry() {
    let registry = MockRegistry::start();
    let format = AvroFormat::new(registry.client(), schema(), "orders-value").unwrap();
    assert_eq!(format.name(), "avro");
    assert_eq!(format.schema(), schema());
    let input = batch(0, 6);
    let payloads = encode(&format, &input);
    for payload in &payloads {
        assert_eq!(&payload[..5], &[0, 0, 0, 0, 1], "magic byte and schema id 1");
    }

    let decoded = format.decoder().unwrap().decode(&slices(&payloads)).unwrap();
    assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
    assert_eq!(decoded.rows_per_payload, vec![1; 6]);
    assert_eq!(decoded.batch, input);

    // A source that only knows the subject reads the same rows.
    let source = AvroFormat::with_registry(registry.client(), "orders-value").unwrap();
    let decoded = source.decoder().unwrap().decode(&slices(&payloads)).unwrap();
    assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
    assert_eq!(decoded.batch.schema(), source.schema());
    assert_eq!(decoded.batch.columns(), input.columns());
    let types: Vec<_> = source.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    let expected: Vec<_> = schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    assert_eq!(types, expected);

    // Its encoder writes with the subject's schema, registering nothing new.
    let again = encode(&source, &decoded.batch);
    assert_eq!(again, payloads);
    assert_eq!(registry.state.lock().unwrap().schemas.len(), 1);

    // An empty poll is an empty batch.
    let decoded = format.decoder().unwrap().decode(&[]).unwrap();
    assert_eq!(decoded.batch.num_rows(), 0);
    assert_eq!(decoded.batch.schema(), schema());
}

#[test]
fn messages_of_several_writer_schemas_decode_into_one_batch() {
    let registry = MockRegistry::start();
    let v1 = AvroFormat::new(registry.client(), schema(), "orders-value").unwrap();
    let mut fields = schema().fields().to_vec();
    fields.push(Arc::new(Field::new("note", DataType::Utf8, true)));
    let v2_schema = Arc::new(Schema::new(fields));
    let v2 = AvroFormat::new(registry.client(), v2_schema.clone(), "orders-value").unwrap();

    let old = encode(&v1, &batch(0, 4));
    let wide = batch(4, 4);
    let mut columns = wide.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec![Some("a"), None, Some("c"), Some("d")])));
    let new = encode(&v2, &RecordBatch::try_new(v2_schema, columns).unwrap());
    assert_eq!(new[0][4], 2, "the second schema got id 2");

    // Interleaved writer schemas, read as the first one (the extra field is skipped).
    let payloads: Vec<&[u8]> = vec![&old[0], &new[0], &new[1], &old[1], &old[2], &new[2], &old[3], &new[3]];
    let decoded = v1.decoder().unwrap().decode(&payloads).unwrap();
    assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
    let counts = decoded.batch.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(counts.values(), &[0, 4, 5, 1, 2, 6, 3, 7]);
}

#[test]
fn each_schema_id_is_fetched_once() {
    let registry = MockRegistry::start();
    let writer = AvroFormat::new(registry.client(), schema(), "orders-value").unwrap();
    let payloads = encode(&writer, &batch(0, 5));

    // A fresh client has nothing cached: the id is fetched by the first decoder, once.
    let format = AvroFormat::new(registry.client(), schema(), "orders-value").unwrap();
    let mut first = format.decoder().unwrap();
    let mut second = format.decoder().unwrap();
    for _ in 0..3 {
        assert_eq!(first.decode(&slices(&payloads)).unwrap().batch.num_rows(), 5);
        assert_eq!(second.decode(&slices(&payloads[1..3])).unwrap().batch.num_rows(), 2);
    }
    assert_eq!(registry.id_requests(1), 1);

    // A missing id is asked once per decoder, not once per payload or poll.
    let mut unknown = payloads[0].clone();
    unknown[1..5].copy_from_slice(&77u32.to_be_bytes());
    for _ in 0..3 {
        let decoded = first.decode(&[&unknown, &unknown, &payloads[0]]).unwrap();
        assert_eq!(decoded.rejected.len(), 2);
    }
    assert_eq!(registry.id_requests(77), 1);
}

#[test]
fn bad_payloads_are_rejected_and_the_others_decoded() {
    let registry = MockRegistry::start();
    let format = AvroFormat::new(registry.client(), schema(), "orders-value").unwrap();
    let input = batch(0, 5);
    let good = encode(&format, &input);

    let garbage = br#"{"name": "not avro"}"#.to_vec();
    let mut unknown_id = good[1].clone();
    unknown_id[1..5].copy_from_slice(&999u32.to_be_bytes());
    let truncated = good[2][..good[2].len() - 3].to_vec();
    let mut trailing = good[3].clone();
    trailing.push(1);
    let short = vec![0, 0, 1];
    let payloads: Vec<&[u8]> = vec![
        &good[0],    // 0
        &garbage,    // 1
        &good[1],    // 2
        &unknown_id, // 3
        &truncated,  // 4
        &good[2],    // 5
        &trailing,   // 6
        &short,      // 7
        &good[3],    // 8
        &[],         // 9
        &good[4],    // 10
    ];
    let decoded = format.decoder().unwrap().decode(&payloads).unwrap();
    let rejected: Vec<usize> = decoded.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, vec![1, 3, 4, 6, 7, 9], "{:?}", decoded.rejected);
    let reason = |index: usize| &decoded.rejected.iter().find(|r| r.index == index).unwrap().reason;
    assert!(reason(1).contains("not Confluent framed: magic byte 0x7b"), "{}", reason(1));
    assert!(reason(3).contains("unknown schema id 999"), "{}", reason(3));
    assert!(reason(4).contains("truncated"), "{}", reason(4));
    assert!(reason(6).contains("unexpected bytes after"), "{}", reason(6));
    assert!(reason(7).contains("3 bytes"), "{}", reason(7));
    assert!(reason(9).contains("empty"), "{}", reason(9));
    assert_eq!(decoded.rows_per_payload, vec![1; 5]);
    assert_eq!(decoded.batch, input);

    // A writer schema that does not resolve to the reader schema (another record name).
    let other = r#"{"type":"record","name":"Other","fields":[{"name":"count","type":"long"}]}"#;
    let other_id = registry.client().register("other-value", other).unwrap();
    let mut unresolvable = good[0].clone();
    unresolvable[1..5].copy_from_slice(&other_id.to_be_bytes());
    // And a record whose string has a negative length.
    let mut invalid = good[1].clone();
    assert_eq!(&invalid[5..7], &[2, 12], "union branch 1, then the length of \"name 1\"");
    invalid[6] = 1;
    let decoded = format.decoder().unwrap().decode(&[&unresolvable, &good[1], &unresolvable, &invalid]).unwrap();
    let rejected: Vec<usize> = decoded.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, vec![0, 2, 3]);
    let reason = &decoded.rejected[0].reason;
    assert!(reason.contains(&format!("schema id {other_id} cannot be read")) && reason.contains("Other"), "{reason}");
    let reason = &decoded.rejected[2].reason;
    assert!(reason.contains("invalid Avro record for schema id 1"), "{reason}");
    assert_eq!(decoded.batch, input.slice(1, 1));

    // Only bad payloads: an empty batch and every one rejected.
    let decoded = format.decoder().unwrap().decode(&[&garbage, &truncated]).unwrap();
    assert_eq!(decoded.batch.num_rows(), 0);
    assert_eq!(decoded.rejected.len(), 2);
    assert!(decoded.rows_per_payload.is_empty());
}

#[test]
fn an_unreachable_registry_is_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let err = AvroFormat::with_registry(SchemaRegistry::new(&url), "orders-value").unwrap_err().to_string();
    assert!(err.contains(&url) && err.contains("orders-value"), "{err}");

    // The registry goes away while a source runs: decoding a new schema id fails, naming it.
    let mut registry = MockRegistry::start();
    let format = AvroFormat::new(registry.client(), schema(), "orders-value").unwrap();
    let payloads = encode(&AvroFormat::new(registry.client(), schema(), "orders-value").unwrap(), &batch(0, 2));
    let url = registry.url.clone();
    registry.stop();
    let err = format.decoder().unwrap().decode(&slices(&payloads)).unwrap_err().to_string();
    assert!(err.contains(&url) && err.contains("schema id 1"), "{err}");

    // An error status is quoted.
    let registry = MockRegistry::start();
    let err = registry.client().latest("nothing-here").unwrap_err().to_string();
    assert!(err.contains("HTTP 404") && err.contains("Subject not found") && err.contains("nothing-here"), "{err}");
    let err = registry.client().schema_by_id(5).unwrap_err().to_string();
    assert!(err.contains("schema id 5") && err.contains(&registry.url), "{err}");
}

#[test]
fn registry_client_registers_and_looks_up() {
    let registry = MockRegistry::start();
    let client = registry.client();
    let v1 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#;
    let v2 = r#"{"type":"record","name":"R","fields":[
        {"name":"a","type":"long"},{"name":"b","type":["null","string"],"default":null}]}"#;
    assert_eq!(client.register("a b/c", v1).unwrap(), 1);
    assert_eq!(client.register("a b/c", v2).unwrap(), 2);
    assert_eq!(client.register("a b/c", v1).unwrap(), 1);
    assert_eq!(client.latest("a b/c").unwrap(), (2, v2.to_string()));
    assert_eq!(registry.client().schema_by_id(1).unwrap(), v1);
    assert_eq!(registry.client().clone().schema_by_id(2).unwrap(), v2);
}

#[test]
fn basic_auth_is_sent_and_never_shown() {
    let registry = MockRegistry::start();
    let client = registry.client().with_basic_auth("alice", "hunter2");
    let shown = format!("{client:?}");
    assert!(shown.contains("alice") && !shown.contains("hunter2"), "{shown}");
    let format = AvroFormat::new(client.clone(), schema(), "orders-value").unwrap();
    assert!(!format!("{format:?}").contains("hunter2"));

    encode(&format, &batch(0, 1));
    let state = registry.state.lock().unwrap();
    // base64("alice:hunter2")
    assert_eq!(state.authorizations, vec![Some("Basic YWxpY2U6aHVudGVyMg==".to_string())]);
    drop(state);

    // Nor in errors.
    let err = client.schema_by_id(42).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    let in_url = SchemaRegistry::new(registry.url.replace("http://", "http://alice:hunter2@"));
    assert!(!format!("{in_url:?}").contains("hunter2"));
    let err = in_url.schema_by_id(42).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
}
