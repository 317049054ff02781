//! The producer and the consumer, per broker.

use super::*;

pub(crate) enum Pub {
    Vela {
        producer: vela_sdk::Producer,
        topic: String,
    },
    Rabbit(Box<Amqp>),
    Nats {
        js: Box<async_nats::jetstream::Context>,
        subject: String,
    },
}

pub(crate) enum Sub {
    Vela(vela_sdk::SimpleConsumer),
    Rabbit(Box<Amqp>),
    Nats(Box<async_nats::jetstream::consumer::PullConsumer>),
}

/// One AMQP connection with its one channel, on one queue.
pub(crate) struct Amqp {
    pub(crate) conn: lapin::Connection,
    pub(crate) channel: lapin::Channel,
    pub(crate) queue: String,
}

impl Pub {
    /// Sends one message and waits until the broker has stored it durably.
    pub(crate) async fn publish(&self, body: Bytes) -> anyhow::Result<()> {
        match self {
            Pub::Vela { producer, topic } => {
                let message = vela_sdk::Message::builder(topic.as_str())
                    .body(body)
                    .build()?;
                producer.send(message).await?;
            }
            Pub::Rabbit(amqp) => {
                let confirm = amqp
                    .channel
                    .basic_publish(
                        "".into(),
                        amqp.queue.as_str().into(),
                        lapin::options::BasicPublishOptions::default(),
                        &body,
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?;
                match confirm.await? {
                    lapin::Confirmation::Ack(_) => {}
                    other => bail!("publish not confirmed: {other:?}"),
                }
            }
            Pub::Nats { js, subject } => {
                js.publish(subject.clone(), body).await?.await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn close(self) {
        match self {
            Pub::Vela { producer, .. } => {
                let _ = producer.shutdown().await;
            }
            Pub::Rabbit(amqp) => {
                let _ = amqp.conn.close(200, "done".into()).await;
            }
            Pub::Nats { js, .. } => {
                let _ = js.client().drain().await;
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Side {
    pub(crate) count: u64,
    pub(crate) errors: Errors,
    pub(crate) latency: Histogram<u64>,
    /// Consumer: from sending each ack to its answer (RabbitMQ's `basic.ack` has none: there it
    /// is the time to hand the frame to the connection).
    pub(crate) ack_latency: Histogram<u64>,
    /// From the phase start to the last counted message.
    pub(crate) elapsed: Duration,
}

impl Side {
    pub(crate) fn idle() -> anyhow::Result<Self> {
        Ok(Self {
            count: 0,
            errors: Errors::default(),
            latency: histogram()?,
            ack_latency: histogram()?,
            elapsed: Duration::ZERO,
        })
    }
}

/// Keeps `IN_FLIGHT` sends going (or sends at `rate` msg/s, at most `IN_FLIGHT` in flight) until
/// `deadline`, then waits for the sends in flight. Latency runs from each send's scheduled time,
/// so under a fixed rate a stall is not hidden.
pub(crate) async fn produce(
    p: &Pub,
    start: Instant,
    deadline: Instant,
    rate: Option<u64>,
) -> anyhow::Result<Side> {
    let mut side = Side::idle()?;
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1) as f64));
    let mut next = start;
    let mut in_flight = FuturesUnordered::new();
    let send = |scheduled: Instant| async move {
        // The body carries the scheduled time too: end-to-end latency includes any wait for a
        // free in-flight slot.
        let sent_us = now_us().saturating_sub(scheduled.elapsed().as_micros() as u64);
        let result = p.publish(body_stamped(sent_us)).await;
        (result, scheduled.elapsed())
    };
    let record = |side: &mut Side, (result, latency): (anyhow::Result<()>, Duration)| match result {
        Ok(()) => {
            side.count += 1;
            side.latency
                .saturating_record((latency.as_micros() as u64).max(1));
            side.elapsed = start.elapsed();
        }
        Err(e) => side.errors.add(format!("{e:#}")),
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if in_flight.len() < IN_FLIGHT {
            match interval {
                None => {
                    in_flight.push(send(now));
                    continue;
                }
                Some(iv) if next <= now => {
                    in_flight.push(send(next));
                    next += iv;
                    continue;
                }
                Some(_) => {}
            }
        }
        let wake = if interval.is_some() && in_flight.len() < IN_FLIGHT {
            next.min(deadline)
        } else {
            deadline
        };
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => record(&mut side, done),
            () = sleep_until(wake.into()) => {}
        }
    }
    let settle = Instant::now() + SETTLE;
    while !in_flight.is_empty() {
        match timeout_at(settle.into(), in_flight.next()).await {
            Ok(Some(done)) => record(&mut side, done),
            Ok(None) => break,
            Err(_) => {
                side.errors.add(format!(
                    "{} sends unconfirmed {SETTLE:?} after the phase",
                    in_flight.len()
                ));
                break;
            }
        }
    }
    Ok(side)
}

impl Sub {
    /// Receives and acks, one ack per message, until `deadline` or until `target` messages are
    /// acked. The latency histogram holds end-to-end latency (send to delivery).
    pub(crate) async fn consume(
        &mut self,
        start: Instant,
        deadline: Instant,
        target: Option<u64>,
    ) -> anyhow::Result<Side> {
        let mut side = Side::idle()?;
        let target = target.unwrap_or(u64::MAX);
        match self {
            Sub::Vela(consumer) => {
                while side.count < target && Instant::now() < deadline {
                    let received = timeout_at(
                        deadline.into(),
                        consumer.receive(VELA_RECEIVE_BATCH, Duration::from_secs(30)),
                    )
                    .await;
                    let messages = match received {
                        Err(_) => break,
                        Ok(Ok(messages)) => messages,
                        Ok(Err(e)) => {
                            side.errors.add(format!("receive: {e}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    for m in &messages {
                        record_e2e(&mut side.latency, &m.body, &mut side.errors);
                    }
                    let acks = futures::future::join_all(messages.iter().map(|m| {
                        let sent = Instant::now();
                        let consumer = &*consumer;
                        async move { (consumer.ack(m).await, sent.elapsed()) }
                    }));
                    for (result, took) in acks.await {
                        match result {
                            Ok(()) => {
                                side.count += 1;
                                record_us(&mut side.ack_latency, took);
                            }
                            Err(e) => side.errors.add(format!("ack: {e}")),
                        }
                    }
                    side.elapsed = start.elapsed();
                }
            }
            Sub::Rabbit(amqp) => {
                use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions};
                let mut deliveries = amqp
                    .channel
                    .basic_consume(
                        amqp.queue.as_str().into(),
                        "peers".into(),
                        BasicConsumeOptions::default(),
                        lapin::types::FieldTable::default(),
                    )
                    .await?;
                while side.count < target {
                    let delivery = match timeout_at(deadline.into(), deliveries.next()).await {
                        Err(_) => break,
                        Ok(None) => bail!("rabbitmq consumer stream ended"),
                        Ok(Some(Err(e))) => {
                            side.errors.add(format!("delivery: {e}"));
                            continue;
                        }
                        Ok(Some(Ok(d))) => d,
                    };
                    record_e2e(&mut side.latency, &delivery.data, &mut side.errors);
                    let sent = Instant::now();
                    match delivery.ack(BasicAckOptions::default()).await {
                        Ok(_) => {
                            side.count += 1;
                            record_us(&mut side.ack_latency, sent.elapsed());
                        }
                        Err(e) => side.errors.add(format!("ack: {e}")),
                    }
                    side.elapsed = start.elapsed();
                }
                // Unacked prefetched deliveries go back to the queue when the channel closes.
                let _ = amqp
                    .channel
                    .basic_cancel("peers".into(), BasicCancelOptions::default())
                    .await;
            }
            Sub::Nats(consumer) => {
                let mut messages = consumer
                    .stream()
                    .max_messages_per_batch(NATS_PULL_BATCH)
                    .messages()
                    .await?;
                let mut acks = FuturesUnordered::new();
                let mut received = 0u64;
                loop {
                    let pull = acks.len() < NATS_PULL_BATCH && received < target;
                    if !pull && acks.is_empty() {
                        break;
                    }
                    tokio::select! {
                        () = sleep_until(deadline.into()) => break,
                        Some((done, took)) = acks.next(), if !acks.is_empty() => {
                            match done {
                                Ok(()) => {
                                    side.count += 1;
                                    record_us(&mut side.ack_latency, took);
                                }
                                Err(e) => side.errors.add(format!("double ack: {e}")),
                            }
                            side.elapsed = start.elapsed();
                        }
                        next = messages.next(), if pull => match next {
                            None => bail!("nats message stream ended"),
                            Some(Err(e)) => side.errors.add(format!("pull: {e}")),
                            Some(Ok(m)) => {
                                received += 1;
                                record_e2e(&mut side.latency, &m.payload, &mut side.errors);
                                let sent = Instant::now();
                                acks.push(async move { (m.double_ack().await, sent.elapsed()) });
                            }
                        },
                    }
                }
                // Acks already sent still count (as with Vela's last batch).
                let settle = Instant::now() + SETTLE;
                while let Ok(Some((done, took))) = timeout_at(settle.into(), acks.next()).await {
                    match done {
                        Ok(()) => {
                            side.count += 1;
                            record_us(&mut side.ack_latency, took);
                        }
                        Err(e) => side.errors.add(format!("double ack: {e}")),
                    }
                    side.elapsed = start.elapsed();
                }
            }
        }
        Ok(side)
    }

    pub(crate) async fn close(self) {
        match self {
            Sub::Vela(consumer) => {
                let _ = consumer.shutdown().await;
            }
            Sub::Rabbit(amqp) => {
                let _ = amqp.conn.close(200, "done".into()).await;
            }
            Sub::Nats(_) => {}
        }
    }
}
