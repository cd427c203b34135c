//! Looking into an error's source chain, where a `Buffer`, redial's own
//! errors or hyper's may wrap the error a test expects.

use std::error::Error;

/// The first error of type `E` in the chain, `err` itself first.
pub fn find<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}
