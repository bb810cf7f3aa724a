package dev.caudal.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** What an operator does with AdminClient, against Caudal. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class AdminClientTest extends WithBroker {
    @Test
    void createsDescribesGrowsAndDeletesATopic() throws Exception {
        String t = CaudalBroker.topic("admin");
        admin.createTopics(List.of(new NewTopic(t, 3, (short) 1))).all().get(30, TimeUnit.SECONDS);
        assertTrue(admin.listTopics().names().get().contains(t));
        TopicDescription d = admin.describeTopics(List.of(t)).allTopicNames().get().get(t);
        assertEquals(3, d.partitions().size());
        d.partitions().forEach(p -> assertTrue(p.leader() != null && p.leader().id() >= 0, "partition " + p + " has a leader"));

        admin.createPartitions(Map.of(t, NewPartitions.increaseTo(5))).all().get(30, TimeUnit.SECONDS);
        TopicDescription grown = admin.describeTopics(List.of(t)).allTopicNames().get().get(t);
        assertEquals(5, grown.partitions().size());

        admin.deleteTopics(List.of(t)).all().get(30, TimeUnit.SECONDS);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (admin.listTopics().names().get().contains(t) && System.nanoTime() < deadline) {
            Thread.sleep(100);
        }
        assertFalse(admin.listTopics().names().get().contains(t), "topic still listed after delete");
    }

    @Test
    void describesAndAltersTopicConfigs() throws Exception {
        String t = CaudalBroker.topic("configs");
        admin.createTopics(List.of(new NewTopic(t, 1, (short) 1).configs(Map.of("retention.ms", "86400000"))))
            .all().get(30, TimeUnit.SECONDS);
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, t);
        Config c = admin.describeConfigs(List.of(r)).all().get().get(r);
        assertEquals("86400000", c.get("retention.ms").value());

        admin.incrementalAlterConfigs(Map.of(r, List.of(
            new AlterConfigOp(new ConfigEntry("retention.ms", "3600000"), AlterConfigOp.OpType.SET))))
            .all().get(30, TimeUnit.SECONDS);
        Config after = admin.describeConfigs(List.of(r)).all().get().get(r);
        assertEquals("3600000", after.get("retention.ms").value());
    }

    @Test
    void describesTheClusterWithEveryShardAsABroker() throws Exception {
        DescribeClusterResult c = admin.describeCluster();
        assertEquals(2, c.nodes().get().size(), "one broker per shard");
        assertTrue(c.controller().get() != null);
        assertTrue(c.clusterId().get() != null && !c.clusterId().get().isEmpty());
    }

    @Test
    void listsOffsetsAtEarliestLatestAndByTime() throws Exception {
        String t = CaudalBroker.topic("offsets");
        admin.createTopics(List.of(new NewTopic(t, 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
        long before = System.currentTimeMillis();
        try (KafkaProducer<String, String> p = new KafkaProducer<>(broker.props(), new StringSerializer(), new StringSerializer())) {
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(t, 0, "k" + i, "v" + i)).get();
            }
        }
        TopicPartition tp = new TopicPartition(t, 0);
        assertEquals(0, admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).all().get().get(tp).offset());
        assertEquals(10, admin.listOffsets(Map.of(tp, OffsetSpec.latest())).all().get().get(tp).offset());
        assertEquals(0, admin.listOffsets(Map.of(tp, OffsetSpec.forTimestamp(before))).all().get().get(tp).offset());
    }

    @Test
    void listsAndDescribesConsumerGroups() throws Exception {
        String t = CaudalBroker.topic("groups");
        String g = CaudalBroker.topic("group");
        admin.createTopics(List.of(new NewTopic(t, 2, (short) 1))).all().get(30, TimeUnit.SECONDS);
        try (KafkaProducer<String, String> p = new KafkaProducer<>(broker.props(), new StringSerializer(), new StringSerializer())) {
            p.send(new ProducerRecord<>(t, "k", "v")).get();
        }
        var props = broker.props();
        props.put("group.id", g);
        props.put("auto.offset.reset", "earliest");
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer())) {
            c.subscribe(List.of(t));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            int got = 0;
            while (got == 0 && System.nanoTime() < deadline) {
                ConsumerRecords<String, String> rs = c.poll(Duration.ofMillis(200));
                got += rs.count();
            }
            assertEquals(1, got);
            c.commitSync();
            Collection<String> ids = admin.listConsumerGroups().all().get().stream()
                .map(l -> l.groupId()).toList();
            assertTrue(ids.contains(g), "listed groups " + ids);
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(g)).all().get().get(g);
            assertEquals(1, d.members().size());
            Set<TopicPartition> assigned = d.members().iterator().next().assignment().topicPartitions();
            assertEquals(2, assigned.size());
        }
        var committed = admin.listConsumerGroupOffsets(g).partitionsToOffsetAndMetadata().get();
        assertEquals(1, committed.values().stream().mapToLong(o -> o.offset()).sum());
    }

    @Test
    void describingAMissingTopicSaysItIsUnknown() {
        var e = org.junit.jupiter.api.Assertions.assertThrows(java.util.concurrent.ExecutionException.class,
            () -> admin.describeTopics(List.of("no-such-topic-" + System.nanoTime())).allTopicNames().get());
        assertTrue(e.getCause() instanceof UnknownTopicOrPartitionException, "got " + e.getCause());
    }
}
