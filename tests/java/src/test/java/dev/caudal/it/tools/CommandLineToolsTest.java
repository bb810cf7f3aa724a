package dev.caudal.it.tools;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.caudal.it.CaudalBroker;
import dev.caudal.it.WithBroker;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.internals.Exit;
import org.apache.kafka.tools.ConfigCommand;
import org.apache.kafka.tools.TopicCommand;
import org.apache.kafka.tools.consumer.group.ConsumerGroupCommand;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Kafka's own command-line tools against Caudal, run in this JVM (their `main`, with
 * Kafka's exit hook turned into an exception) so that the JVM starts once.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class CommandLineToolsTest extends WithBroker {
    /** What one tool run printed and the status it exited with. */
    record Run(int status, String out) {}

    static final class Exited extends RuntimeException {
        final int status;

        Exited(int status) {
            super("exit " + status);
            this.status = status;
        }
    }

    interface Main {
        void run(String[] args) throws Exception;
    }

    /**
     * Runs a tool's `main` here. Some tools ask to exit from inside a `try` whose `catch`
     * turns any exception into status 1, so the status is the first one asked for.
     */
    static synchronized Run tool(Main main, String... args) throws Exception {
        PrintStream savedOut = System.out;
        PrintStream savedErr = System.err;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int[] first = {-1};
        Exit.setExitProcedure((code, msg) -> {
            if (first[0] < 0) {
                first[0] = code;
            }
            throw new Exited(code);
        });
        System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
        try {
            main.run(args);
        } catch (Exited e) {
            // the status is in `first`
        } finally {
            System.setOut(savedOut);
            System.setErr(savedErr);
            Exit.resetExitProcedure();
        }
        String out = buf.toString(StandardCharsets.UTF_8);
        String errText = err.toString(StandardCharsets.UTF_8);
        int status = Math.max(first[0], 0);
        if (status != 0) {
            out = out + "\n--- stderr:\n" + errText;
        }
        return new Run(status, out);
    }

    static Run topics(String... args) throws Exception {
        List<String> a = new ArrayList<>(List.of("--bootstrap-server", broker.bootstrap()));
        a.addAll(List.of(args));
        return tool(TopicCommand::main, a.toArray(String[]::new));
    }

    @Test
    void topicCommandCreatesDescribesAltersAndDeletes() throws Exception {
        String t = CaudalBroker.topic("cli-topic");
        Run created = topics("--create", "--topic", t, "--partitions", "2");
        assertEquals(0, created.status(), created.out());
        assertTrue(created.out().contains("Created topic " + t), created.out());

        Run described = topics("--describe", "--topic", t);
        assertEquals(0, described.status(), described.out());
        assertTrue(described.out().contains("PartitionCount: 2"), described.out());

        Run altered = topics("--alter", "--topic", t, "--partitions", "4");
        assertEquals(0, altered.status(), altered.out());
        assertTrue(topics("--describe", "--topic", t).out().contains("PartitionCount: 4"));

        assertTrue(topics("--list").out().lines().anyMatch(t::equals));
        Run deleted = topics("--delete", "--topic", t);
        assertEquals(0, deleted.status(), deleted.out());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (topics("--list").out().lines().anyMatch(t::equals) && System.nanoTime() < deadline) {
            Thread.sleep(100);
        }
        assertTrue(topics("--list").out().lines().noneMatch(t::equals), "still listed after --delete");
    }

    @Test
    void configCommandAltersAndDescribesTopicConfigs() throws Exception {
        String t = CaudalBroker.topic("cli-config");
        assertEquals(0, topics("--create", "--topic", t, "--partitions", "1").status());
        Run alter = tool(ConfigCommand::main, "--bootstrap-server", broker.bootstrap(), "--alter",
            "--entity-type", "topics", "--entity-name", t, "--add-config", "retention.ms=3600000");
        assertEquals(0, alter.status(), alter.out());
        Run describe = tool(ConfigCommand::main, "--bootstrap-server", broker.bootstrap(), "--describe",
            "--entity-type", "topics", "--entity-name", t);
        assertEquals(0, describe.status(), describe.out());
        assertTrue(describe.out().contains("retention.ms=3600000"), describe.out());
    }

    @Test
    void consumerGroupCommandDescribesResetsAndDeletesAGroup() throws Exception {
        String t = CaudalBroker.topic("cli-group");
        String g = CaudalBroker.topic("cli-g");
        assertEquals(0, topics("--create", "--topic", t, "--partitions", "2").status());
        var props = broker.props();
        try (var p = new KafkaProducer<>(props, new StringSerializer(), new StringSerializer())) {
            for (int i = 0; i < 20; i++) {
                p.send(new ProducerRecord<>(t, "k" + i, "v" + i)).get();
            }
        }
        props.put("group.id", g);
        props.put("auto.offset.reset", "earliest");
        props.put("enable.auto.commit", "false");
        try (var c = new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer())) {
            c.subscribe(List.of(t));
            int got = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (got < 20 && System.nanoTime() < deadline) {
                got += c.poll(Duration.ofMillis(200)).count();
            }
            assertEquals(20, got);
            c.commitSync();
        }
        String[] base = {"--bootstrap-server", broker.bootstrap(), "--group", g};
        Run describe = tool(ConsumerGroupCommand::main, concat(base, "--describe"));
        assertEquals(0, describe.status(), describe.out());
        assertTrue(describe.out().contains(t), describe.out());
        // Both partitions' lag is 0 after the commit.
        long rows = describe.out().lines().filter(l -> l.contains(t)).count();
        assertEquals(2, rows, describe.out());

        Run reset = tool(ConsumerGroupCommand::main, concat(base, "--reset-offsets", "--to-earliest",
            "--topic", t, "--execute"));
        assertEquals(0, reset.status(), reset.out());
        Run after = tool(ConsumerGroupCommand::main, concat(base, "--describe", "--offsets"));
        long atZero = after.out().lines().filter(l -> l.contains(t))
            .filter(l -> l.trim().split("\\s+").length > 3 && l.trim().split("\\s+")[3].equals("0")).count();
        assertEquals(2, atZero, "every partition's committed offset is 0 after the reset:\n" + after.out());

        Run delete = tool(ConsumerGroupCommand::main, concat(base, "--delete"));
        assertEquals(0, delete.status(), delete.out());
        Run list = tool(ConsumerGroupCommand::main, "--bootstrap-server", broker.bootstrap(), "--list");
        assertTrue(list.out().lines().noneMatch(g::equals), "group still listed:\n" + list.out());
    }

    static String[] concat(String[] a, String... b) {
        String[] out = new String[a.length + b.length];
        System.arraycopy(a, 0, out, 0, a.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
