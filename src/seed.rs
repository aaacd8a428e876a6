//! The demo catalog: enough categories and products to browse, with a few scarce items
//! so that buyers collide on the same inventory rows.
//!
//! Idempotent: a category or product that already exists (by name) is left alone, so
//! running it twice gives the same catalog. `restock` puts the seeded stock levels back
//! after a load test has sold things out.

use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::auth::{Role, hash_password, users};
use crate::config::DemoCustomer;
use crate::{catalog, inventory};

/// (category, description, products as (name, description, price in cents, stock)).
type SeedCategory = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, i64, i32)],
);

pub const CATALOG: &[SeedCategory] = &[
    (
        "Kitchen",
        "Cookware, small appliances and everything for the morning coffee",
        &[
            (
                "Espresso Machine Barista Pro",
                "15-bar pump, steam wand, 2 l tank",
                34900,
                25,
            ),
            (
                "Electric Kettle 1.7 l",
                "Stainless steel, keep-warm function",
                3999,
                120,
            ),
            (
                "Cast Iron Skillet 28 cm",
                "Pre-seasoned, oven safe",
                4450,
                60,
            ),
            ("Chef's Knife 20 cm", "German steel, full tang", 7900, 40),
            ("Stand Mixer Artisan", "4.8 l bowl, ten speeds", 44900, 15),
            (
                "Pour-Over Coffee Set",
                "Glass dripper, 40 filters, gooseneck kettle",
                5900,
                80,
            ),
        ],
    ),
    (
        "Electronics",
        "Gadgets for work and play",
        &[
            (
                "Noise-Cancelling Headphones",
                "30 h battery, USB-C",
                24900,
                35,
            ),
            (
                "Mechanical Keyboard TKL",
                "Hot-swappable switches, PBT keycaps",
                11900,
                50,
            ),
            ("4K Monitor 27\"", "IPS, 60 Hz, USB-C 65 W", 32900, 20),
            (
                "Wireless Mouse Ergo",
                "Vertical design, silent clicks",
                4999,
                90,
            ),
            (
                "USB-C Dock 11-in-1",
                "Dual HDMI, 100 W pass-through",
                8900,
                45,
            ),
            (
                "Limited Edition Game Console",
                "Launch bundle, one per customer",
                49900,
                3,
            ),
        ],
    ),
    (
        "Books",
        "Reading for engineers and everyone else",
        &[
            (
                "Designing Data-Intensive Applications",
                "Paperback",
                4599,
                70,
            ),
            (
                "The Pragmatic Programmer",
                "20th anniversary edition",
                3999,
                65,
            ),
            (
                "Release It!",
                "Design and deploy production-ready software",
                4199,
                55,
            ),
            (
                "Site Reliability Engineering",
                "How Google runs production systems",
                4999,
                40,
            ),
            (
                "Signed First Edition: Monoliths Forever",
                "Signed by the author",
                9900,
                2,
            ),
        ],
    ),
    (
        "Outdoor",
        "Gear for weekends away from the keyboard",
        &[
            (
                "Trail Running Shoes",
                "Grippy outsole, 8 mm drop",
                12900,
                50,
            ),
            ("Ultralight Tent 2P", "1.2 kg, freestanding", 29900, 12),
            (
                "Insulated Water Bottle 750 ml",
                "Keeps cold 24 h",
                2999,
                150,
            ),
            ("Headlamp 400 lm", "Rechargeable, red light mode", 3499, 75),
            ("Camping Stove Compact", "Piezo ignition, 2.6 kW", 4599, 30),
        ],
    ),
    (
        "Home Office",
        "Work from home, comfortably",
        &[
            (
                "Standing Desk Frame",
                "Dual motor, memory presets",
                39900,
                10,
            ),
            (
                "Ergonomic Office Chair",
                "Lumbar support, 4D armrests",
                34900,
                18,
            ),
            (
                "Desk Lamp LED",
                "Dimmable, colour temperature control",
                5900,
                60,
            ),
            ("Cable Management Kit", "Trays, sleeves and ties", 2499, 100),
            (
                "Last-Batch Walnut Monitor Stand",
                "Hand-finished, small batch",
                14900,
                4,
            ),
        ],
    ),
];

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub categories_created: u64,
    pub products_created: u64,
    pub products_restocked: u64,
}

/// Creates what is missing of the demo catalog, in one transaction.
pub async fn seed_demo_catalog(conn: &mut PgConnection, restock: bool) -> sqlx::Result<SeedReport> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    let mut report = SeedReport::default();
    for (category, category_description, products) in CATALOG {
        report.categories_created +=
            catalog::store::insert_category_if_missing(&mut tx, category, category_description)
                .await?;

        for (name, description, cents, stock) in *products {
            let price = Decimal::new(*cents, 2);
            let created = catalog::store::insert_product_if_missing(
                &mut tx,
                name,
                description,
                price,
                category,
            )
            .await?;
            if let Some(product_id) = created {
                inventory::open(&mut tx, product_id, *stock).await?;
                report.products_created += 1;
            } else if restock {
                report.products_restocked +=
                    inventory::reset_by_name(&mut tx, name, *stock).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// The storefront's demo customer, with the configured password (created, or its
/// password put back).
pub async fn seed_demo_customer(
    conn: &mut PgConnection,
    customer: &DemoCustomer,
) -> anyhow::Result<()> {
    let password_hash = hash_password(customer.password.clone()).await?;
    users::put(
        conn,
        customer.email.as_str(),
        &password_hash,
        "Demo Customer",
        Role::Customer,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::CATALOG;

    #[test]
    fn the_catalog_has_scarce_items_and_unique_names() {
        let products: Vec<_> = CATALOG.iter().flat_map(|(_, _, p)| p.iter()).collect();
        assert!(products.len() >= 25);
        assert!(
            products
                .iter()
                .filter(|(_, _, _, stock)| *stock <= 5)
                .count()
                >= 3
        );
        let mut names: Vec<_> = products.iter().map(|(name, ..)| *name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), products.len());
        assert!(
            products
                .iter()
                .all(|(_, _, cents, stock)| *cents > 0 && *stock > 0)
        );
    }
}
