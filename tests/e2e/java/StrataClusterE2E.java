// Java kafka-clients driver for tests/e2e/test_cluster.py. Compiled with javac at test time
// against tests/e2e/.deps/java/*.jar.
//
//   java StrataClusterE2E <bootstrap-of-one-broker> <all-brokers> <topic>
//       Admin.describeCluster (the brokers), describeMetadataQuorum (leader, voters), createTopics through the one broker, describeTopics
//       (partition leaders), then a producer (acks=all) and a group consumer over all brokers.
//
// Prints "RESULT {json}" lines on stdout and a final "DONE".
import java.time.Duration;
import java.util.*;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class StrataClusterE2E {
    public static void main(String[] args) throws Exception {
        String one = args[0], all = args[1], topic = args[2];
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, one);
        try (Admin admin = Admin.create(ap)) {
            List<Integer> brokers = admin.describeCluster().nodes().get().stream().map(Node::id).sorted()
                .collect(Collectors.toList());
            System.out.println("RESULT {\"brokers\": " + brokers + "}");
            // What kafka-metadata-quorum.sh describe --status asks (DescribeQuorum, KIP-836).
            QuorumInfo q = admin.describeMetadataQuorum().quorumInfo().get();
            List<Integer> voters = q.voters().stream().map(QuorumInfo.ReplicaState::replicaId).sorted()
                .collect(Collectors.toList());
            System.out.println("RESULT {\"quorum_leader\": " + q.leaderId() + ", \"quorum_voters\": " + voters
                + ", \"quorum_epoch\": " + q.leaderEpoch() + ", \"quorum_hw\": " + q.highWatermark() + "}");
            admin.createTopics(List.of(new NewTopic(topic, 6, (short) 1))).all().get();
            Set<Integer> leaders = new TreeSet<>();
            for (int attempt = 0; attempt < 100; attempt++) {
                leaders.clear();
                TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
                for (TopicPartitionInfo p : d.partitions()) {
                    if (p.leader() != null) leaders.add(p.leader().id());
                }
                if (d.partitions().size() == 6) break;
                Thread.sleep(50);
            }
            System.out.println("RESULT {\"leaders\": " + leaders + "}");
        }
        Properties pp = new Properties();
        pp.put("bootstrap.servers", all);
        pp.put("acks", "all");
        pp.put("key.serializer", StringSerializer.class.getName());
        pp.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            for (int i = 0; i < 200; i++) p.send(new ProducerRecord<>(topic, "k" + i, "v" + i));
            p.flush();
        }
        Properties cp = new Properties();
        cp.put("bootstrap.servers", all);
        cp.put("group.id", "java-cluster-group");
        cp.put("auto.offset.reset", "earliest");
        cp.put("key.deserializer", StringDeserializer.class.getName());
        cp.put("value.deserializer", StringDeserializer.class.getName());
        Set<String> keys = new HashSet<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 60_000;
            while (keys.size() < 200 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(500))) keys.add(r.key());
            }
            c.commitSync();
        }
        System.out.println("RESULT {\"consumed\": " + keys.size() + "}");
        System.out.println("DONE");
    }
}
