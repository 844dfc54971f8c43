//! Publish quarantined raw records to a Kafka dead-letter topic.
//!
//! # Inputs
//! The quarantined records of an epoch, from the Iceberg sink, before the epoch is committed.
//!
//! # Outputs
//! One message per record on the dead-letter topic: the raw bytes as received, keyed by
//! `source#partition:offset`, with headers `custody-reason-kind`, `custody-reason`,
//! `custody-source`, `custody-partition`, `custody-offset`, `custody-raw-sha256` and, where
//! known, `custody-tenant` (the authenticated tenant in signed-header mode).
//!
//! # Delivery
//! At least once: an epoch is committed to the lake only after every dead letter of it was
//! acknowledged by the broker (idempotent producer, `acks=all`), so a crash re-publishes
//! rather than loses; consumers deduplicate by key.
//!
//! # Metrics
//! `custody_dead_letters_total`.
//!
//! # Failure modes
//! A delivery failure fails the epoch's commit: the sink stops and the pipeline stops
//! consuming, saying why.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::record::Quarantined;
use crate::sources::kafka::kafka_client_config;

/// See the module docs.
pub struct DeadLetter {
    producer: FutureProducer,
    topic: String,
    metrics: Metrics,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetter {
    /// A producer for `topic` on `brokers`; creates the topic (one partition) if missing.
    pub async fn connect(
        brokers: &str,
        topic: impl Into<String>,
        metrics: Metrics,
    ) -> Result<Self> {
        let topic = topic.into();
        ensure_topic(brokers, &topic).await?;
        let producer = kafka_client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "60000")
            .create()?;
        Ok(DeadLetter {
            producer,
            topic,
            metrics,
        })
    }

    /// Publishes every record and waits for the broker to acknowledge them all.
    pub async fn publish(&self, source: &str, records: &[Quarantined]) -> Result<()> {
        let keys: Vec<[String; 3]> = records
            .iter()
            .map(|q| {
                [
                    format!("{source}#{}:{}", q.partition, q.offset),
                    q.partition.to_string(),
                    q.offset.to_string(),
                ]
            })
            .collect();
        let mut deliveries = Vec::with_capacity(records.len());
        for (q, [key, partition, offset]) in records.iter().zip(&keys) {
            let mut headers = OwnedHeaders::new()
                .insert(header("custody-reason-kind", &q.reason_kind))
                .insert(header("custody-reason", &q.reason))
                .insert(header("custody-source", source))
                .insert(header("custody-partition", partition))
                .insert(header("custody-offset", offset))
                .insert(header("custody-raw-sha256", &q.raw_sha256));
            if let Some(tenant) = &q.tenant_id {
                headers = headers.insert(header("custody-tenant", tenant));
            }
            let record = FutureRecord::to(&self.topic)
                .key(key)
                .payload(&q.raw)
                .headers(headers);
            deliveries.push(self.producer.send(record, Duration::from_secs(30)));
        }
        for delivery in deliveries {
            delivery.await.map_err(|(e, _)| {
                Error::SinkStopped(format!(
                    "dead-letter topic {:?}: delivery failed: {e}",
                    self.topic
                ))
            })?;
            self.metrics.dead_letters.inc();
        }
        Ok(())
    }
}

/// Creates `topic` (one partition) unless it exists.
pub async fn ensure_topic(brokers: &str, topic: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka_client_config(brokers).create()?;
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in created {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(Error::SinkStopped(format!("creating topic {t:?}: {code}")));
            }
        }
    }
    Ok(())
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
