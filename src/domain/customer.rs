/// Who an order's confirmation goes to, as the account says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Customer {
    // The aliases read jobs written before the payloads were typed.
    #[serde(alias = "customer_email")]
    pub email: String,
    #[serde(alias = "customer_name")]
    pub name: String,
}
