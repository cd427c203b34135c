use std::convert::Infallible;
use redial::{discover, ReconnectLayer};
use tower::{balance::p2c::Balance, service_fn, Service, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    let connector = service_fn(|port: u16| async move {
        Ok::<_, Infallible>(service_fn(move |n: u32| async move {
            Ok::<_, Infallible>(format!("{n} from {port}"))
        }))
    });
    let (_registry, endpoints) = discover::channel([8001_u16, 8002]);
    let pools = ReconnectLayer::new(()).pool(2).discover(endpoints, connector);
    let watch = pools.watch();
    println!("{:?}", watch.state());
    let mut balanced = Balance::new(pools);
    let r = balanced.ready().await?.call(7).await;
    println!("{r:?}");
    let r = balanced.oneshot(8).await;
    println!("{r:?}");
    Ok(())
}
