package dev.caudal.it;

import java.time.Duration;
import org.apache.kafka.clients.admin.Admin;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/** A Caudal broker and an AdminClient for every test of a class (classes run one by one). */
public abstract class WithBroker {
    /** The broker of the running test class. */
    protected static CaudalBroker broker;
    /** An AdminClient connected to it. */
    protected static Admin admin;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = CaudalBroker.start();
        admin = Admin.create(broker.props());
    }

    @AfterAll
    static void stopBroker() throws Exception {
        if (admin != null) {
            admin.close(Duration.ofSeconds(10));
            admin = null;
        }
        if (broker != null) {
            broker.close();
            broker = null;
        }
    }
}
