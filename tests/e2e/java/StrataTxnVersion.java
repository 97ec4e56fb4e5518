import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Which transaction protocol the client chose, seen from the coordinator: three commits (each
 * with sendOffsetsToTransaction), then DescribeTransactions and ListTransactions through the
 * Admin client, and DescribeProducers on the partition written. Under transactions V2 (KIP-890
 * part 2, kafka-clients 4.x against a broker with transaction.version 2) every commit bumps the
 * producer epoch; under the first protocol it stays. Args: bootstrap, transactional id, topic.
 * Prints one RESULT line: {"state":..,"epoch":..,"listed":..,"committed":..,"producer_shown":..}.
 */
public class StrataTxnVersion {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], id = args[1], topic = args[2];
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("transactional.id", id);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            producer.initTransactions();
            for (int i = 0; i < 3; i++) {
                producer.beginTransaction();
                producer.send(new ProducerRecord<>(topic, "k", "v" + i)).get();
                producer.sendOffsetsToTransaction(
                        java.util.Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(i + 1)),
                        new ConsumerGroupMetadata(id + "-group"));
                producer.commitTransaction();
            }
        }
        Properties a = new Properties();
        a.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(a)) {
            TransactionDescription d = admin.describeTransactions(List.of(id)).description(id).get();
            boolean listed = admin.listTransactions().all().get().stream()
                    .anyMatch(l -> l.transactionalId().equals(id));
            long committed = admin.listConsumerGroupOffsets(id + "-group").partitionsToOffsetAndMetadata().get()
                    .get(new TopicPartition(topic, 0)).offset();
            // DescribeProducers: the partition remembers the producer, with no transaction open.
            boolean producerShown = admin.describeProducers(List.of(new TopicPartition(topic, 0))).all().get()
                    .get(new TopicPartition(topic, 0)).activeProducers().stream()
                    .anyMatch(s -> s.producerId() == d.producerId() && s.currentTransactionStartOffset().isEmpty());
            System.out.println("RESULT {\"state\":\"" + d.state() + "\",\"epoch\":" + d.producerEpoch()
                    + ",\"listed\":" + listed + ",\"committed\":" + committed
                    + ",\"producer_shown\":" + producerShown + "}");
        }
    }
}
