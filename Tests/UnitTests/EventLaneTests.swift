@testable import AMQP
@testable import BuilddMasterKit
import Testing

@Suite(.timeLimit(.minutes(1))) struct EventLaneTests {
    func delivery(routingKey: String, builderHeader: String?) -> Delivery {
        Delivery(consumerTag: "c", deliveryTag: 1, generation: 1, redelivered: false, exchange: "buildd.status",
                 routingKey: routingKey,
                 properties: MessageProperties(headers: builderHeader.map { ["builder": .string($0)] } ?? [:]),
                 body: [])
    }

    /// One builder's events always go to the same lane (so they are applied in order), found from the
    /// `builder` header agents send or, without it, from the routing key; builders spread over the lanes.
    @Test func aBuildersEventsShareALaneAndBuildersSpread() {
        for name in ["bld-amd64-01", "a.b.c", "x"] {
            let kinds = ["hello", "accepted", "heartbeat", "finished"]
            let byHeader = Set(kinds.map {
                EventConsumer.lane(of: delivery(routingKey: "\(name).\($0)", builderHeader: name), among: 4)
            })
            let byKey = Set(kinds.map {
                EventConsumer.lane(of: delivery(routingKey: "\(name).\($0)", builderHeader: nil), among: 4)
            })
            #expect(byHeader.count == 1, "\(name): lanes \(byHeader)")
            #expect(byKey.count == 1, "\(name): lanes \(byKey)")
        }
        let used = Set((0..<64).map {
            EventConsumer.lane(of: delivery(routingKey: "b\($0).heartbeat", builderHeader: "b\($0)"), among: 4)
        })
        #expect(used == [0, 1, 2, 3])
        #expect(EventConsumer.lane(of: delivery(routingKey: "b1.hello", builderHeader: "b1"), among: 1) == 0)
    }
}
