// Java kafka-clients driver for tests/e2e/test_replication.py: an idempotent acks=all
// producer and an assign-mode consumer working through a leader failover. The test kills
// the leader once this program prints "STARTED"; the program must see nothing but retries.
//
//   java StrataFailover <bootstrap> <topic> <partitions> <records>
//
// Sends <records> values "j<i>" spread over the partitions, a few hundred a second, while
// a consumer reads the topic from the start. Prints "CHECK" lines: "produced" (acknowledged
// count and the exception classes of failed sends), "consumed" (records read, distinct
// values, whether every acknowledged value was read, duplicates), then "DONE".
import java.time.Duration;
import java.util.*;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class StrataFailover {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int partitions = Integer.parseInt(args[2]), records = Integer.parseInt(args[3]);
        Set<String> acked = ConcurrentHashMap.newKeySet();
        Map<String, Integer> failures = new ConcurrentHashMap<>();
        List<String> consumed = Collections.synchronizedList(new ArrayList<>());
        AtomicBoolean producing = new AtomicBoolean(true);

        Thread reader = new Thread(() -> {
            Properties c = new Properties();
            c.put("bootstrap.servers", bootstrap);
            c.put("key.deserializer", StringDeserializer.class.getName());
            c.put("value.deserializer", StringDeserializer.class.getName());
            c.put("enable.auto.commit", "false");
            c.put("auto.offset.reset", "earliest");
            try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
                List<TopicPartition> tps = new ArrayList<>();
                for (int i = 0; i < partitions; i++) tps.add(new TopicPartition(topic, i));
                consumer.assign(tps);
                consumer.seekToBeginning(tps);
                long idleSince = System.currentTimeMillis();
                while (true) {
                    ConsumerRecords<String, String> got = consumer.poll(Duration.ofMillis(200));
                    for (ConsumerRecord<String, String> r : got) consumed.add(r.value());
                    if (!got.isEmpty()) idleSince = System.currentTimeMillis();
                    boolean done = !producing.get() && consumed.size() >= acked.size();
                    if (done && System.currentTimeMillis() - idleSince > 1000) break;
                    if (!producing.get() && System.currentTimeMillis() - idleSince > 60000) break;
                }
            }
        });
        reader.start();

        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("acks", "all");
        p.put("enable.idempotence", "true");
        p.put("linger.ms", "5");
        p.put("delivery.timeout.ms", "120000");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < records; i++) {
                String v = "j" + i;
                producer.send(new ProducerRecord<>(topic, i % partitions, null, v), (md, e) -> {
                    if (e == null) acked.add(v);
                    else failures.merge(e.getClass().getName(), 1, Integer::sum);
                });
                if (i == records / 4) {
                    producer.flush();
                    System.out.println("STARTED");
                    System.out.flush();
                }
                if (i % 20 == 0) Thread.sleep(10);
            }
            producer.flush();
        }
        producing.set(false);
        reader.join();
        Set<String> distinct = new HashSet<>(consumed);
        System.out.println("CHECK {\"check\": \"produced\", \"result\": {\"acked\": " + acked.size()
            + ", \"failures\": \"" + failures + "\"}}");
        System.out.println("CHECK {\"check\": \"consumed\", \"result\": {\"records\": " + consumed.size()
            + ", \"distinct\": " + distinct.size() + ", \"all_acked_read\": " + distinct.containsAll(acked) + "}}");
        System.out.println("DONE");
    }
}
