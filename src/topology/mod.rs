//! Topologies: which `hearth serve` processes make up a deployment
//! ([`plan`]: data only), `hearth up`, which starts and supervises them
//! ([`launcher`]), and an nginx configuration for the same routing as the
//! gateway ([`nginx`]), and Kubernetes YAML rendered from the same plan
//! ([`kubernetes`]).

pub mod kubernetes;
pub mod launcher;
pub mod nginx;
pub mod plan;

pub use launcher::up;
pub use plan::{
    plan, Deployment, Endpoint, Part, Serves, Topology, TOPOLOGY_ENV, TOPOLOGY_FILE_ENV,
};
