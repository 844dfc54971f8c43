//! A Kafka topic, consumed by a consumer group with manual offset commits.
//!
//! Offsets are committed to the broker only after the epoch that contains them is durable in
//! the lake ([`Source::ack`]), so a crash re-reads uncommitted records rather than losing them.
//! Payloads are taken as raw bytes; a message without a payload becomes an empty record and is
//! quarantined by the decoder.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::record::RawRecord;
use crate::sinks::iceberg::SourcePositions;
use crate::sources::Source;

/// Kafka connection settings.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Topic to consume.
    pub topic: String,
    /// Consumer group id.
    pub group_id: String,
}

/// The client configuration every Custody Kafka client starts from.
#[allow(clippy::disallowed_methods)] // the one place allowed to create a client config
pub fn kafka_client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "2000");
    config
}

/// Consumes a topic; see the module docs.
pub struct KafkaSource {
    config: KafkaConfig,
    consumer: BaseConsumer,
}

impl KafkaSource {
    /// Connects and subscribes.
    pub fn new(config: KafkaConfig) -> Result<Self> {
        let consumer: BaseConsumer = kafka_client_config(&config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()?;
        consumer.subscribe(&[&config.topic])?;
        Ok(KafkaSource { config, consumer })
    }
}

impl Source for KafkaSource {
    fn name(&self) -> String {
        format!("kafka:{}", self.config.topic)
    }

    fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Option<Vec<RawRecord>>> {
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
                Some(Ok(msg)) => batch.push(RawRecord::new(
                    msg.partition(),
                    msg.offset(),
                    msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                )),
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

/// Highest offset per partition in a batch.
pub fn positions_of(source: String, batch: &[RawRecord]) -> SourcePositions {
    let mut partitions = BTreeMap::new();
    for r in batch {
        let e = partitions.entry(r.partition).or_insert(r.offset);
        *e = (*e).max(r.offset);
    }
    SourcePositions { source, partitions }
}
