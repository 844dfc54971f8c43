//! A Kafka topic, read partition by partition from the positions the lake recorded.
//!
//! Like Arroyo's and Flink's Kafka sources, the pipeline owns its assignment and offsets: every
//! partition of the topic is assigned explicitly, starting after the last offset durable in
//! `custody.epochs` ([`Source::seek`]); only for partitions the lake has never seen does the
//! consumer group's committed offset (or the beginning) apply. Offsets are committed to the
//! group after the epoch that contains them is durable in the lake ([`Source::ack`]), for lag
//! tooling, never as the source of truth. New partitions are picked up every
//! `metadata_refresh`.
//!
//! Producers are expected to key messages by tenant, so that a tenant's events share a
//! partition and keep their order. The `custody-producer` and `custody-signature` headers are
//! passed on as a [`ProducerClaim`] for the decoder to authenticate.
//!
//! # Backpressure
//! Records are only polled when the driver asks for a batch; librdkafka's prefetch queue is
//! capped by `fetch_queue_kbytes`.
//!
//! # Metrics
//! `custody_kafka_consumer_lag{topic,partition}` from librdkafka statistics.
//!
//! # Failure modes
//! Broker errors are retried by librdkafka (a broker restart shows up as a pause, with a
//! warning every 5 s); a fatal or authentication error stops the run with the message.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prometheus::IntGaugeVec;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::record::{ProducerClaim, RawRecord};
use crate::sinks::iceberg::SourcePositions;
use crate::sources::Source;

/// Header naming the producer of a record.
pub const PRODUCER_HEADER: &str = "custody-producer";
/// Header carrying the producer's HMAC-SHA256 over the record bytes, hex.
pub const SIGNATURE_HEADER: &str = "custody-signature";

/// Kafka connection settings.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Topic to consume.
    pub topic: String,
    /// Consumer group id (offset commits for lag tooling).
    pub group_id: String,
    /// Cap on librdkafka's prefetch queue, KiB.
    pub fetch_queue_kbytes: u32,
    /// How often to look for new partitions.
    pub metadata_refresh: Duration,
    /// How long the brokers may take to first answer with the topic's partitions.
    pub connect_timeout: Duration,
}

/// The librdkafka security properties (`security.protocol`, `ssl.*`, `sasl.*`) every client
/// of this process uses, set once at start-up from `[kafka]` ([`set_kafka_security`]).
static SECURITY: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Sets the security properties of every Kafka client this process makes (TLS, SASL). The
/// first call wins; later ones are ignored (one process, one cluster).
pub fn set_kafka_security(properties: Vec<(String, String)>) {
    let _ = SECURITY.set(properties);
}

/// The client configuration every Custody Kafka client starts from.
#[allow(clippy::disallowed_methods)] // the one place allowed to create a client config
pub fn kafka_client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "2000");
    for (key, value) in SECURITY.get().into_iter().flatten() {
        config.set(key, value);
    }
    config
}

/// Publishes librdkafka statistics as metrics.
struct LagContext {
    lag: IntGaugeVec,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.lag
                        .with_label_values(&[&topic, &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for LagContext {}

/// Consumes a topic; see the module docs.
pub struct KafkaSource {
    config: KafkaConfig,
    consumer: BaseConsumer<LagContext>,
    /// Partition → last offset durable in the lake.
    durable: BTreeMap<i32, i64>,
    /// Partitions assigned so far.
    assigned: BTreeMap<i32, ()>,
    last_refresh: Option<Instant>,
    last_warning: Option<Instant>,
    /// When the source was created.
    created: Instant,
    /// Whether the brokers ever answered with the topic's partitions.
    connected: bool,
    /// Why they have not, as last seen.
    last_error: Option<String>,
}

impl KafkaSource {
    /// Connects; partitions are assigned on the first poll (after [`Source::seek`]).
    pub fn new(config: KafkaConfig, metrics: &Metrics) -> Result<Self> {
        let consumer: BaseConsumer<LagContext> = kafka_client_config(&config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "5000")
            .set(
                "queued.max.messages.kbytes",
                config.fetch_queue_kbytes.to_string(),
            )
            .create_with_context(LagContext {
                lag: metrics.kafka_lag.clone(),
            })?;
        Ok(KafkaSource {
            config,
            consumer,
            durable: BTreeMap::new(),
            assigned: BTreeMap::new(),
            last_refresh: None,
            last_warning: None,
            created: Instant::now(),
            connected: false,
            last_error: None,
        })
    }

    /// The error of a source whose brokers never answered with the topic's partitions.
    fn never_connected(&self) -> Error {
        Error::NeverConnected {
            source_name: self.name(),
            message: format!(
                "no metadata for topic {:?} from brokers {:?} in {:.0?} ({})",
                self.config.topic,
                self.config.brokers,
                self.created.elapsed(),
                self.last_error
                    .as_deref()
                    .unwrap_or("the brokers did not answer")
            ),
        }
    }

    /// Assigns partitions not assigned yet, at the position the lake (or else the group)
    /// has for them.
    fn assign_new_partitions(&mut self) -> Result<()> {
        // Until the brokers answered with the topic, ask on every poll.
        if self.connected
            && self
                .last_refresh
                .is_some_and(|t| t.elapsed() < self.config.metadata_refresh)
        {
            return Ok(());
        }
        self.last_refresh = Some(Instant::now());
        let topic = self.config.topic.as_str();
        let metadata = match self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic, error = %e, "topic metadata unavailable; retrying");
                self.last_error = Some(e.to_string());
                return Ok(());
            }
        };
        match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => self.connected = true,
            Some(t) => {
                self.last_error = Some(match t.error() {
                    Some(e) => format!("topic error: {:?}", RDKafkaErrorCode::from(e)),
                    None => "the topic has no partitions".into(),
                });
            }
            None => self.last_error = Some("the topic does not exist".into()),
        }
        let new: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .filter(|p| !self.assigned.contains_key(p))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut unknown = TopicPartitionList::new();
        for &p in new.iter().filter(|p| !self.durable.contains_key(p)) {
            unknown.add_partition(topic, p);
        }
        let group: BTreeMap<i32, Offset> = if unknown.count() == 0 {
            BTreeMap::new()
        } else {
            self.consumer
                .committed_offsets(unknown, Duration::from_secs(10))
                .map(|tpl| {
                    tpl.elements()
                        .iter()
                        .map(|e| (e.partition(), e.offset()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut assignment = self.consumer.assignment()?;
        for &p in &new {
            let offset = match self.durable.get(&p) {
                Some(&last) => Offset::Offset(last + 1),
                None => match group.get(&p) {
                    Some(&Offset::Offset(o)) => Offset::Offset(o),
                    _ => Offset::Beginning,
                },
            };
            tracing::info!(topic, partition = p, ?offset, "assigning partition");
            assignment.add_partition_offset(topic, p, offset)?;
            self.assigned.insert(p, ());
        }
        // Re-assigning keeps the positions of partitions already assigned: librdkafka resumes
        // them from where they are when given their current offsets.
        for e in self.consumer.position()?.elements() {
            if let Offset::Offset(o) = e.offset() {
                assignment.set_partition_offset(e.topic(), e.partition(), Offset::Offset(o))?;
            }
        }
        self.consumer.assign(&assignment)?;
        Ok(())
    }
}

impl Source for KafkaSource {
    fn name(&self) -> String {
        format!("kafka:{}", self.config.topic)
    }

    fn seek(&mut self, durable: &BTreeMap<i32, i64>) -> Result<()> {
        self.durable = durable.clone();
        self.assigned.clear();
        self.last_refresh = None;
        self.consumer.unassign()?;
        self.assign_new_partitions()
    }

    fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<RawRecord>>> {
        self.assign_new_partitions()?;
        if !self.connected {
            if self.created.elapsed() >= self.config.connect_timeout {
                return Err(self.never_connected());
            }
            std::thread::sleep(wait.min(Duration::from_millis(200)));
            return Ok(Some(Vec::new()));
        }
        let deadline = Instant::now() + wait;
        let mut batch = Vec::new();
        while batch.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = if batch.is_empty() {
                left
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(timeout) {
                None => {
                    if batch.is_empty() && Instant::now() < deadline {
                        continue;
                    }
                    break;
                }
                Some(Ok(msg)) => {
                    let mut record = RawRecord::new(
                        msg.partition(),
                        msg.offset(),
                        msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    );
                    record.producer = msg.headers().and_then(producer_claim);
                    batch.push(record);
                }
                // librdkafka recovers from every consumer error but a fatal one by itself (a
                // broker restart is a run of transport errors): log and keep polling.
                Some(Err(e)) if !is_fatal(&e) => {
                    if self
                        .last_warning
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
                    {
                        tracing::warn!(error = %e, "kafka consumer error; librdkafka is retrying");
                        self.last_warning = Some(Instant::now());
                    }
                    if batch.is_empty() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    break;
                }
                Some(Err(e)) => {
                    return Err(Error::Source {
                        source_name: self.name(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(Some(batch))
    }

    fn check_connected(&self) -> Result<()> {
        if self.connected {
            Ok(())
        } else {
            Err(self.never_connected())
        }
    }

    fn ack(&mut self, positions: &SourcePositions) -> Result<()> {
        if positions.partitions.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (&partition, &offset) in &positions.partitions {
            list.add_partition_offset(&self.config.topic, partition, Offset::Offset(offset + 1))?;
        }
        self.consumer.commit(&list, CommitMode::Async)?;
        Ok(())
    }
}

/// The producer claim in a message's headers, if it has one. A signature that is not hex is
/// kept as empty, which fails verification with the reason.
fn producer_claim<H: Headers>(headers: &H) -> Option<ProducerClaim> {
    let mut producer_id = None;
    let mut signature = Vec::new();
    for h in headers.iter() {
        match (h.key, h.value) {
            (PRODUCER_HEADER, Some(v)) => producer_id = Some(String::from_utf8_lossy(v).into()),
            (SIGNATURE_HEADER, Some(v)) => signature = hex::decode(v).unwrap_or_default(),
            _ => {}
        }
    }
    Some(ProducerClaim {
        producer_id: producer_id?,
        signature,
    })
}

/// Whether a consumer error cannot be recovered from by librdkafka.
fn is_fatal(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fatal | RDKafkaErrorCode::Authentication)
    )
}

/// Highest offset per partition in a batch.
pub fn positions_of(source: String, batch: &[RawRecord]) -> SourcePositions {
    let mut partitions = BTreeMap::new();
    for r in batch {
        let e = partitions.entry(r.partition).or_insert(r.offset);
        *e = (*e).max(r.offset);
    }
    SourcePositions {
        source,
        partitions,
        fingerprint: None,
        clock_us: None,
        byte_position: None,
    }
}
