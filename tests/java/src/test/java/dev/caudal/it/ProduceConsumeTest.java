package dev.caudal.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Producing and consuming with the Java client as applications do. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ProduceConsumeTest extends WithBroker {
    static String newTopic(String what, int partitions) throws Exception {
        String t = CaudalBroker.topic(what);
        admin.createTopics(List.of(new NewTopic(t, partitions, (short) 1))).all().get(30, TimeUnit.SECONDS);
        return t;
    }

    static KafkaProducer<String, String> producer(Map<String, Object> extra) {
        Properties p = broker.props();
        p.putAll(extra);
        return new KafkaProducer<>(p, new StringSerializer(), new StringSerializer());
    }

    static KafkaConsumer<String, String> consumer(String group) {
        Properties p = broker.props();
        if (group != null) {
            p.put("group.id", group);
        }
        p.put("auto.offset.reset", "earliest");
        p.put("enable.auto.commit", "false");
        return new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer());
    }

    /** Polls until `want` records arrived or 30 s passed. */
    static List<ConsumerRecord<String, String>> pollFor(KafkaConsumer<String, String> c, int want) {
        List<ConsumerRecord<String, String>> out = new ArrayList<>();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (out.size() < want && System.nanoTime() < deadline) {
            c.poll(Duration.ofMillis(200)).forEach(out::add);
        }
        return out;
    }

    @ParameterizedTest
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void everyCodecRoundTrips(String codec) throws Exception {
        String t = newTopic("codec-" + codec, 2);
        int n = 500;
        try (KafkaProducer<String, String> p = producer(Map.of("compression.type", codec, "linger.ms", 5))) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                acks.add(p.send(new ProducerRecord<>(t, "key-" + i, "value-" + i + "-" + "x".repeat(i % 50))));
            }
            for (Future<RecordMetadata> a : acks) {
                a.get(30, TimeUnit.SECONDS);
            }
        }
        try (KafkaConsumer<String, String> c = consumer(null)) {
            List<TopicPartition> tps = List.of(new TopicPartition(t, 0), new TopicPartition(t, 1));
            c.assign(tps);
            c.seekToBeginning(tps);
            List<ConsumerRecord<String, String>> got = pollFor(c, n);
            assertEquals(n, got.size(), codec + ": records read back");
            Set<String> values = new HashSet<>();
            got.forEach(r -> values.add(r.key() + "=" + r.value()));
            for (int i = 0; i < n; i++) {
                assertTrue(values.contains("key-" + i + "=value-" + i + "-" + "x".repeat(i % 50)), codec + " lost record " + i);
            }
        }
    }

    @Test
    void idempotentProducerWritesEachRecordOnceInOrder() throws Exception {
        String t = newTopic("idempotent", 1);
        int n = 2000;
        try (KafkaProducer<String, String> p = producer(Map.of("enable.idempotence", true, "acks", "all",
            "max.in.flight.requests.per.connection", 5, "linger.ms", 1, "batch.size", 4096))) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                acks.add(p.send(new ProducerRecord<>(t, null, String.valueOf(i))));
            }
            for (int i = 0; i < n; i++) {
                assertEquals(i, acks.get(i).get(30, TimeUnit.SECONDS).offset(), "record " + i + "'s offset");
            }
        }
        try (KafkaConsumer<String, String> c = consumer(null)) {
            TopicPartition tp = new TopicPartition(t, 0);
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = pollFor(c, n);
            assertEquals(n, got.size());
            for (int i = 0; i < n; i++) {
                assertEquals(String.valueOf(i), got.get(i).value());
            }
        }
    }

    @Test
    void aGroupOfTwoSharesThePartitionsAndRebalancesWhenOneLeaves() throws Exception {
        String t = newTopic("rebalance", 4);
        String g = CaudalBroker.topic("g");
        Map<String, Set<TopicPartition>> owned = new ConcurrentHashMap<>();
        AtomicBoolean stop = new AtomicBoolean();
        List<Thread> members = new ArrayList<>();
        for (String name : List.of("a", "b")) {
            Thread th = new Thread(() -> {
                try (KafkaConsumer<String, String> c = consumer(g)) {
                    c.subscribe(List.of(t), new ConsumerRebalanceListener() {
                        @Override
                        public void onPartitionsRevoked(Collection<TopicPartition> ps) {
                            owned.put(name, Set.of());
                        }

                        @Override
                        public void onPartitionsAssigned(Collection<TopicPartition> ps) {
                            owned.put(name, Set.copyOf(c.assignment()));
                        }
                    });
                    while (!stop.get() && !(name.equals("b") && owned.getOrDefault("leave-b", Set.of()).size() > 0)) {
                        c.poll(Duration.ofMillis(100));
                    }
                }
            }, "member-" + name);
            th.start();
            members.add(th);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline
            && !(owned.getOrDefault("a", Set.of()).size() == 2 && owned.getOrDefault("b", Set.of()).size() == 2)) {
            Thread.sleep(100);
        }
        assertEquals(2, owned.getOrDefault("a", Set.of()).size(), "member a's share: " + owned);
        assertEquals(2, owned.getOrDefault("b", Set.of()).size(), "member b's share: " + owned);
        Set<TopicPartition> all = new HashSet<>(owned.get("a"));
        all.addAll(owned.get("b"));
        assertEquals(4, all.size(), "together they own every partition");

        // b leaves (close sends LeaveGroup): a takes over all four.
        owned.put("leave-b", Set.of(new TopicPartition(t, 0)));
        members.get(1).join(30_000);
        deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline && owned.getOrDefault("a", Set.of()).size() != 4) {
            Thread.sleep(100);
        }
        assertEquals(4, owned.getOrDefault("a", Set.of()).size(), "after b left: " + owned);
        stop.set(true);
        members.get(0).join(30_000);
    }

    @Test
    void aConsumerResumesFromItsCommittedOffsets() throws Exception {
        String t = newTopic("resume", 2);
        String g = CaudalBroker.topic("resume-g");
        try (KafkaProducer<String, String> p = producer(Map.of())) {
            for (int i = 0; i < 100; i++) {
                p.send(new ProducerRecord<>(t, "k" + (i % 7), "first-" + i)).get();
            }
        }
        try (KafkaConsumer<String, String> c = consumer(g)) {
            c.subscribe(List.of(t));
            assertEquals(100, pollFor(c, 100).size());
            c.commitSync();
        }
        try (KafkaProducer<String, String> p = producer(Map.of())) {
            for (int i = 0; i < 50; i++) {
                p.send(new ProducerRecord<>(t, "k" + (i % 7), "second-" + i)).get();
            }
        }
        try (KafkaConsumer<String, String> c = consumer(g)) {
            c.subscribe(List.of(t));
            List<ConsumerRecord<String, String>> got = pollFor(c, 50);
            // Nothing of what was committed arrives again, however long we wait.
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(2);
            while (System.nanoTime() < end) {
                c.poll(Duration.ofMillis(200)).forEach(got::add);
            }
            assertEquals(50, got.size());
            got.forEach(r -> assertTrue(r.value().startsWith("second-"), "re-read " + r.value()));
        }
    }

    @Test
    void offsetsForTimesAndSeekFindTheFirstRecordAtOrAfterATime() throws Exception {
        String t = newTopic("times", 1);
        TopicPartition tp = new TopicPartition(t, 0);
        long base = System.currentTimeMillis() - 100_000;
        try (KafkaProducer<String, String> p = producer(Map.of())) {
            for (int i = 0; i < 10; i++) {
                // Record i carries timestamp base + i * 1000 (CreateTime).
                p.send(new ProducerRecord<>(t, 0, base + i * 1000L, "k", "v" + i)).get();
            }
        }
        try (KafkaConsumer<String, String> c = consumer(null)) {
            Map<TopicPartition, Long> query = new HashMap<>();
            query.put(tp, base + 4500);
            OffsetAndTimestamp at = c.offsetsForTimes(query).get(tp);
            assertEquals(5, at.offset());
            assertEquals(base + 5000, at.timestamp());
            c.assign(List.of(tp));
            c.seek(tp, at.offset());
            List<ConsumerRecord<String, String>> got = pollFor(c, 5);
            assertEquals("v5", got.get(0).value());
            c.seek(tp, 8);
            assertEquals("v8", pollFor(c, 1).get(0).value());
            query.put(tp, base + 60_000);
            assertEquals(null, c.offsetsForTimes(query).get(tp), "no record at or after that time");
        }
    }
}
