//! The story templates: shopping, baking, saving, sharing, travel, classroom, garden, reading,
//! farm, pies, ticket sales, sports and a pizza party. Each writes a question from facts and a
//! solution of 2 to 5 computation steps, one sentence each, then `"The answer is N."`.
//!
//! Rules every template keeps (the tests check them on thousands of problems): every number in
//! a computation is in the question or an earlier result; results are whole, positive and at
//! most [`MAX_VALUE`]; a step starts with a capital letter, holds exactly one `a op b = c`, and
//! ends with a word and a period (no digit before the period, no other `.?!`), so that sentence
//! splitters cut a solution back into exactly its steps.

use crate::rng::SplitMix64;

/// Largest number a problem may contain.
pub(super) const MAX_VALUE: u64 = 5000;

/// A generated problem before it gets an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Story {
    pub question: String,
    pub steps: Vec<String>,
    pub answer: u64,
}

/// Draws one problem with 2 to 5 computation steps; `None` when the numbers drawn do not fit
/// the template (the caller draws again).
pub(super) fn draw(rng: &mut SplitMix64) -> Option<Story> {
    const TEMPLATES: [fn(&mut Draw<'_>, usize) -> Option<Story>; 13] = [
        shopping, baking, saving, sharing, travel, classroom, garden, reading, eggs, pies, tickets,
        basketball, pizza,
    ];
    let mut d = Draw(rng);
    let steps = 2 + d.0.below(4);
    let template = d.pick(&TEMPLATES)?;
    template(&mut d, steps)
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

use Op::{Add, Div, Mul, Sub};

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
        }
    }

    fn apply(self, a: u64, b: u64) -> Option<u64> {
        match self {
            Add => a.checked_add(b),
            Sub => a.checked_sub(b),
            Mul => a.checked_mul(b),
            Div => (b != 0 && a.is_multiple_of(b)).then(|| a / b),
        }
    }
}

struct Draw<'a>(&'a mut SplitMix64);

impl Draw<'_> {
    /// Uniform in `lo..=hi` (`lo` when the range is empty).
    fn int(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.0.below((hi - lo + 1) as usize) as u64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        items.get(self.0.below(items.len())).copied()
    }

    fn coin(&mut self) -> bool {
        self.0.below(2) == 1
    }

    fn person(&mut self) -> Option<Person> {
        self.pick(PEOPLE)
            .map(|(name, female)| Person { name, female })
    }

    fn other_person(&mut self, not: Person) -> Option<Person> {
        (0..8)
            .filter_map(|_| self.person())
            .find(|p| p.name != not.name)
    }

    /// A divisor of `n` in `lo..=hi`, drawn uniformly among them.
    fn divisor(&mut self, n: u64, lo: u64, hi: u64) -> Option<u64> {
        let divisors: Vec<u64> = (lo.max(1)..=hi).filter(|&k| n.is_multiple_of(k)).collect();
        self.pick(&divisors)
    }
}

#[derive(Debug, Clone, Copy)]
struct Person {
    name: &'static str,
    female: bool,
}

impl Person {
    fn she(self) -> &'static str {
        if self.female { "she" } else { "he" }
    }
    fn she_cap(self) -> &'static str {
        if self.female { "She" } else { "He" }
    }
    fn her(self) -> &'static str {
        if self.female { "her" } else { "him" }
    }
    fn poss(self) -> &'static str {
        if self.female { "her" } else { "his" }
    }
    fn poss_cap(self) -> &'static str {
        if self.female { "Her" } else { "His" }
    }
}

const PEOPLE: &[(&str, bool)] = &[
    ("Mia", true),
    ("Emma", true),
    ("Olivia", true),
    ("Ava", true),
    ("Sofia", true),
    ("Priya", true),
    ("Zara", true),
    ("Chloe", true),
    ("Nina", true),
    ("Hana", true),
    ("Grace", true),
    ("Maya", true),
    ("Lena", true),
    ("Aisha", true),
    ("Elena", true),
    ("Rosa", true),
    ("Yuki", true),
    ("Iris", true),
    ("Ella", true),
    ("Ruby", true),
    ("Fatima", true),
    ("Lucia", true),
    ("Liam", false),
    ("Noah", false),
    ("Ethan", false),
    ("Lucas", false),
    ("Amir", false),
    ("Kenji", false),
    ("Omar", false),
    ("Leo", false),
    ("Ravi", false),
    ("Diego", false),
    ("Ben", false),
    ("Sam", false),
    ("Tariq", false),
    ("Jack", false),
    ("Felix", false),
    ("Carlos", false),
    ("Hugo", false),
    ("Tom", false),
    ("Max", false),
    ("Adam", false),
    ("Mateo", false),
    ("Kofi", false),
];

/// The question's facts and the solution's steps as they are written.
#[derive(Default)]
struct Builder {
    facts: Vec<String>,
    steps: Vec<String>,
    last: u64,
}

impl Builder {
    fn fact(&mut self, sentence: String) {
        self.facts.push(sentence);
    }

    /// Computes `a op b`, writes the step `sentence("a op b = c")` and returns `c`; `None`
    /// when the result is not a whole number in `1..=MAX_VALUE`.
    fn calc(
        &mut self,
        a: u64,
        op: Op,
        b: u64,
        sentence: impl FnOnce(&str) -> String,
    ) -> Option<u64> {
        let c = op.apply(a, b).filter(|&c| (1..=MAX_VALUE).contains(&c))?;
        let expr = format!("{a} {} {b} = {c}", op.symbol());
        self.steps.push(sentence(&expr));
        self.last = c;
        Some(c)
    }

    fn finish(mut self, ask: String) -> Option<Story> {
        if !(2..=5).contains(&self.steps.len()) {
            return None;
        }
        self.steps.push(format!("The answer is {}.", self.last));
        self.facts.push(ask);
        Some(Story {
            question: self.facts.join(" "),
            steps: self.steps,
            answer: self.last,
        })
    }
}

const SHOP_ITEMS: &[(&str, u64, u64)] = &[
    ("notebooks", 2, 6),
    ("pens", 1, 4),
    ("apples", 1, 3),
    ("comic books", 3, 9),
    ("candles", 2, 8),
    ("water bottles", 2, 7),
    ("packs of gum", 1, 3),
    ("toy cars", 3, 12),
    ("bags of rice", 4, 15),
    ("mugs", 3, 10),
    ("pairs of socks", 2, 6),
    ("plant pots", 3, 9),
];

fn shopping(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let (item1, lo1, hi1) = d.pick(SHOP_ITEMS)?;
    let (item2, lo2, hi2) = d.pick(SHOP_ITEMS)?;
    if item1 == item2 {
        return None;
    }
    let mut b = Builder::default();
    let (n1, p1) = (d.int(2, 9), d.int(lo1, hi1));
    b.fact(format!("{} buys {n1} {item1} for ${p1} each.", p.name));
    let mut total = b.calc(n1, Mul, p1, |e| {
        format!("{} pays {e} dollars for the {item1}.", p.name)
    })?;
    let second = n >= 3;
    if second {
        let (n2, p2) = (d.int(2, 9), d.int(lo2, hi2));
        b.fact(format!(
            "{} also buys {n2} {item2} for ${p2} each.",
            p.she_cap()
        ));
        let c2 = b.calc(n2, Mul, p2, |e| {
            format!("{} pays {e} dollars for the {item2}.", p.she_cap())
        })?;
        total = b.calc(total, Add, c2, |e| {
            format!("Together the {item1} and the {item2} cost {e} dollars.")
        })?;
    }
    let extras = n - 1 - if second { 2 } else { 0 };
    let coupon = extras == 2 || (extras == 1 && d.coin());
    let change = extras == 2 || (extras == 1 && !coupon);
    let mut ask = format!("How many dollars does {} spend in all?", p.name);
    if coupon {
        let off = d.int(1, (total / 3).max(1));
        b.fact(format!(
            "{} has a coupon for ${off} off the total.",
            p.she_cap()
        ));
        total = b.calc(total, Sub, off, |e| {
            format!("With the coupon {} pays {e} dollars.", p.she())
        })?;
        ask = format!("How many dollars does {} pay?", p.name);
    }
    if change {
        let bill = [10, 20, 50, 100].into_iter().find(|&bill| bill > total)?;
        b.fact(format!("{} pays with a ${bill} bill.", p.she_cap()));
        b.calc(bill, Sub, total, |e| {
            format!("{} gets {e} dollars in change.", p.name)
        })?;
        ask = format!("How many dollars of change does {} get?", p.name);
    }
    b.finish(ask)
}

const BAKED: &[&str] = &[
    "cookies", "muffins", "cupcakes", "brownies", "rolls", "scones",
];

fn baking(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let friend = d.other_person(p)?;
    let item = d.pick(BAKED)?;
    let (batches, per) = (d.int(2, 6), d.int(6, 24));
    let mut b = Builder::default();
    b.fact(format!(
        "{} bakes {batches} batches of {per} {item}.",
        p.name
    ));
    let mut have = b.calc(batches, Mul, per, |e| {
        format!("{} bakes {e} {item}.", p.name)
    })?;
    // n = 2: give away or box; 3: give, box; 4: + sell; 5: + profit.
    let give = n >= 3 || d.coin();
    let boxes = n >= 3 || !give;
    let k = d.int(2, 6);
    let mut ask = String::new();
    if give {
        let gift = if boxes {
            // Leave a multiple of the box size.
            let r = have % k;
            let r = if r == 0 { k } else { r };
            r + k * d.int(0, 2)
        } else {
            d.int(2, (have / 3).max(2))
        };
        if gift >= have {
            return None;
        }
        b.fact(format!(
            "{} gives {gift} {item} to {}.",
            p.she_cap(),
            friend.name
        ));
        have = b.calc(have, Sub, gift, |e| {
            format!(
                "After giving some to {}, {} has {e} {item} left.",
                friend.name,
                p.she()
            )
        })?;
        ask = format!("How many {item} does {} have left?", p.name);
    }
    if boxes {
        let what = if give { "the rest" } else { "them" };
        b.fact(format!("{} packs {what} into boxes of {k}.", p.she_cap()));
        have = b.calc(have, Div, k, |e| {
            format!("{} fills {e} boxes.", p.she_cap())
        })?;
        ask = format!("How many boxes does {} fill?", p.name);
    }
    if n >= 4 {
        let price = d.int(3, 12);
        b.fact(format!("{} sells each box for ${price}.", p.she_cap()));
        have = b.calc(have, Mul, price, |e| {
            format!("{} earns {e} dollars from the boxes.", p.she_cap())
        })?;
        ask = format!("How many dollars does {} earn?", p.name);
    }
    if n >= 5 {
        let cost = d.int(2, (have * 2 / 3).max(2));
        b.fact(format!("The ingredients cost {} ${cost}.", p.her()));
        b.calc(have, Sub, cost, |e| {
            format!("{} profit is {e} dollars.", p.poss_cap())
        })?;
        ask = format!("How many dollars of profit does {} make?", p.name);
    }
    b.finish(ask)
}

const THINGS: &[&str] = &[
    "book",
    "kite",
    "board game",
    "pair of shoes",
    "puzzle",
    "backpack",
    "toy robot",
    "scarf",
    "bike helmet",
    "watch",
];

fn saving(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let relative = d.pick(&["grandmother", "grandfather", "aunt", "uncle"])?;
    let thing = d.pick(THINGS)?;
    let (weekly, weeks) = (d.int(3, 15), d.int(3, 12));
    let mut b = Builder::default();
    b.fact(format!(
        "{} saves ${weekly} every week for {weeks} weeks.",
        p.name
    ));
    let mut money = b.calc(weekly, Mul, weeks, |e| {
        format!("{} saves {e} dollars in those weeks.", p.name)
    })?;
    let gift = n >= 3 || d.coin();
    let spend = n >= 3 || !gift;
    let mut ask = String::new();
    if gift {
        let amount = d.int(5, 40);
        b.fact(format!(
            "Then {} {relative} gives {} ${amount}.",
            p.poss(),
            p.her()
        ));
        money = b.calc(money, Add, amount, |e| {
            format!("With the gift {} has {e} dollars.", p.she())
        })?;
        ask = format!("How many dollars does {} have now?", p.name);
    }
    let jars = d.int(2, 5);
    if spend {
        let price = if n >= 4 {
            let r = money % jars;
            let r = if r == 0 { jars } else { r };
            r + jars * d.int(1, 4)
        } else {
            d.int(5, (money * 2 / 3).max(5))
        };
        b.fact(format!("{} spends ${price} on a {thing}.", p.she_cap()));
        money = b.calc(money, Sub, price, |e| {
            format!(
                "After buying the {thing}, {} has {e} dollars left.",
                p.she()
            )
        })?;
        ask = format!("How many dollars does {} have left?", p.name);
    }
    if n >= 4 {
        b.fact(format!(
            "{} splits the money that is left equally into {jars} jars.",
            p.she_cap()
        ));
        money = b.calc(money, Div, jars, |e| format!("Each jar gets {e} dollars."))?;
        ask = "How many dollars are in each jar?".to_owned();
    }
    if n >= 5 {
        let more = d.int(2, 10);
        b.fact(format!("Later {} adds ${more} to each jar.", p.she()));
        b.calc(money, Add, more, |e| {
            format!("Each jar then holds {e} dollars.")
        })?;
        ask = "How many dollars are in each jar now?".to_owned();
    }
    b.finish(ask)
}

const SMALL_THINGS: &[&str] = &[
    "stickers",
    "marbles",
    "beads",
    "trading cards",
    "seashells",
    "candies",
    "crayons",
    "buttons",
];

fn sharing(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let item = d.pick(SMALL_THINGS)?;
    let (start, packs, per) = (d.int(5, 40), d.int(2, 6), d.int(4, 12));
    let mut b = Builder::default();
    b.fact(format!("{} has {start} {item}.", p.name));
    b.fact(format!(
        "{} buys {packs} packs with {per} {item} in each pack.",
        p.she_cap()
    ));
    let bought = b.calc(packs, Mul, per, |e| format!("The packs hold {e} {item}."))?;
    let mut have = b.calc(start, Add, bought, |e| {
        format!("Now {} has {e} {item}.", p.name)
    })?;
    let mut ask = format!("How many {item} does {} have now?", p.name);
    if n >= 3 {
        let friends = if n >= 4 {
            let k = d.int(2, 6);
            let r = have % k;
            let lost = (if r == 0 { k } else { r }) + k * d.int(0, 2);
            if lost >= have / 2 {
                return None;
            }
            b.fact(format!("{} loses {lost} of them.", p.she_cap()));
            have = b.calc(have, Sub, lost, |e| {
                format!("After losing some, {} has {e} {item}.", p.she())
            })?;
            k
        } else {
            d.divisor(have, 2, 8)?
        };
        b.fact(format!(
            "Then {} shares them equally among {friends} friends.",
            p.she()
        ));
        have = b.calc(have, Div, friends, |e| {
            format!("Each friend gets {e} {item}.")
        })?;
        ask = format!("How many {item} does each friend get?");
    }
    if n >= 5 {
        let had = d.int(3, 20);
        b.fact(format!("One of the friends already had {had} {item}."));
        b.calc(have, Add, had, |e| {
            format!("That friend now has {e} {item}.")
        })?;
        ask = format!("How many {item} does that friend have now?");
    }
    b.finish(ask)
}

fn travel(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let (speed, hours) = (d.pick(&[30, 40, 45, 50, 55, 60, 65])?, d.int(2, 4));
    let mut b = Builder::default();
    b.fact(format!(
        "{} drives at {speed} miles per hour for {hours} hours.",
        p.name
    ));
    let first = b.calc(speed, Mul, hours, |e| {
        format!("In {hours} hours {} drives {e} miles.", p.she())
    })?;
    let more = n >= 3 || d.coin();
    let fuel = n >= 3 || !more;
    let mut miles = first;
    let mut ask = String::new();
    let mpg;
    if more {
        mpg = d.pick(&[10, 15, 20, 25, 30])?;
        // Total miles: a multiple of the car's miles per gallon, past the first part.
        let gallons = first / mpg + 1 + d.int(0, 3);
        let extra = mpg * gallons - first;
        b.fact(format!("Then {} drives {extra} more miles.", p.she()));
        miles = b.calc(first, Add, extra, |e| {
            format!("{} drives {e} miles in all.", p.she_cap())
        })?;
        ask = format!("How many miles does {} drive in all?", p.name);
    } else {
        mpg = d.divisor(first, 10, 30)?;
    }
    if fuel {
        b.fact(format!(
            "{} car uses one gallon of gas for every {mpg} miles.",
            p.poss_cap()
        ));
        miles = b.calc(miles, Div, mpg, |e| {
            format!("The trip uses {e} gallons of gas.")
        })?;
        ask = "How many gallons of gas does the trip use?".to_owned();
    }
    if n >= 4 {
        let price = d.int(3, 6);
        b.fact(format!("Gas costs ${price} per gallon."));
        miles = b.calc(miles, Mul, price, |e| format!("The gas costs {e} dollars."))?;
        ask = "How many dollars does the gas cost?".to_owned();
    }
    if n >= 5 {
        let bill = [20, 50, 100].into_iter().find(|&bill| bill > miles)?;
        b.fact(format!(
            "{} pays for the gas with a ${bill} bill.",
            p.she_cap()
        ));
        b.calc(bill, Sub, miles, |e| {
            format!("{} gets {e} dollars in change.", p.she_cap())
        })?;
        ask = format!("How many dollars of change does {} get?", p.name);
    }
    b.finish(ask)
}

fn classroom(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let (classes, size) = (d.int(3, 8), d.int(18, 30));
    let mut b = Builder::default();
    b.fact(format!(
        "{} teaches at a school with {classes} classes of {size} students each.",
        p.name
    ));
    let mut students = b.calc(classes, Mul, size, |e| {
        format!("The school has {e} students.")
    })?;
    let absent = n >= 3 || d.coin();
    let teams = n >= 3 || !absent;
    let team = d.int(3, 8);
    let mut ask = String::new();
    if absent {
        let away = if teams {
            let r = students % team;
            (if r == 0 { team } else { r }) + team * d.int(0, 2)
        } else {
            d.int(3, 20)
        };
        b.fact(format!("On a rainy day {away} students stay home."));
        students = b.calc(students, Sub, away, |e| {
            format!("That day {e} students come to school.")
        })?;
        ask = "How many students come to school that day?".to_owned();
    }
    if teams {
        let who = if absent {
            "The students at school"
        } else {
            "The students"
        };
        b.fact(format!("{who} are split into teams of {team}."));
        students = b.calc(students, Div, team, |e| format!("They form {e} teams."))?;
        ask = "How many teams are there?".to_owned();
    }
    if n >= 4 {
        let balls = d.int(2, 4);
        b.fact(format!("Each team gets {balls} balls."));
        students = b.calc(students, Mul, balls, |e| {
            format!("The teams get {e} balls in all.")
        })?;
        ask = "How many balls do the teams get?".to_owned();
    }
    if n >= 5 {
        let gym = students + d.int(5, 60);
        b.fact(format!("The gym has {gym} balls."));
        b.calc(gym, Sub, students, |e| {
            format!("After handing them out, the gym has {e} balls left.")
        })?;
        ask = "How many balls are left in the gym?".to_owned();
    }
    b.finish(ask)
}

const CROPS: &[(&str, &str)] = &[
    ("tomato", "tomatoes"),
    ("pepper", "peppers"),
    ("strawberry", "strawberries"),
    ("bean", "beans"),
    ("cucumber", "cucumbers"),
    ("pumpkin", "pumpkins"),
];

fn garden(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let friend = d.other_person(p)?;
    let (plant, fruit) = d.pick(CROPS)?;
    let (rows, per) = (d.int(2, 8), d.int(4, 12));
    let mut b = Builder::default();
    b.fact(format!(
        "{} plants {rows} rows of {per} {plant} plants.",
        p.name
    ));
    let mut count = b.calc(rows, Mul, per, |e| {
        format!("{} plants {e} {plant} plants.", p.name)
    })?;
    let eaten = n >= 3 || d.coin();
    let grow = n >= 3 || !eaten;
    let mut ask = String::new();
    if eaten {
        let lost = d.int(1, (count / 4).max(1));
        b.fact(format!("Rabbits eat {lost} of the plants."));
        count = b.calc(count, Sub, lost, |e| format!("That leaves {e} plants."))?;
        ask = "How many plants are left?".to_owned();
    }
    if grow {
        let each = d.int(2, 9);
        let which = if eaten {
            "Each plant that is left"
        } else {
            "Each plant"
        };
        b.fact(format!("{which} grows {each} {fruit}."));
        count = b.calc(count, Mul, each, |e| {
            format!("The plants grow {e} {fruit}.")
        })?;
        ask = format!("How many {fruit} do the plants grow?");
    }
    let basket = d.int(3, 10);
    if n >= 4 {
        let gift = if n >= 5 {
            let r = count % basket;
            (if r == 0 { basket } else { r }) + basket * d.int(0, 3)
        } else {
            d.int(2, (count / 3).max(2))
        };
        b.fact(format!(
            "{} gives {gift} {fruit} to {}.",
            p.she_cap(),
            friend.name
        ));
        count = b.calc(count, Sub, gift, |e| {
            format!("{} keeps {e} {fruit}.", p.she_cap())
        })?;
        ask = format!("How many {fruit} does {} keep?", p.name);
    }
    if n >= 5 {
        b.fact(format!(
            "{} packs the {fruit} {} keeps into baskets of {basket}.",
            p.she_cap(),
            p.she()
        ));
        b.calc(count, Div, basket, |e| {
            format!("{} fills {e} baskets.", p.she_cap())
        })?;
        ask = format!("How many baskets does {} fill?", p.name);
    }
    b.finish(ask)
}

fn reading(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let (daily, days) = (d.int(5, 30), d.int(2, 7));
    let read = daily * days;
    let mut b = Builder::default();
    let pages = if n >= 5 {
        let (chapters, per) = (d.int(5, 20), d.int(8, 30));
        if chapters * per <= read + 10 {
            return None;
        }
        b.fact(format!(
            "A book has {chapters} chapters of {per} pages each."
        ));
        b.calc(chapters, Mul, per, |e| format!("The book has {e} pages."))?
    } else {
        let later = if n >= 3 {
            d.int(10, 40) * d.int(2, 6)
        } else {
            d.int(20, 200)
        };
        let pages = read + later;
        b.fact(format!("A book has {pages} pages."));
        pages
    };
    b.fact(format!(
        "{} reads {daily} pages every day for {days} days.",
        p.name
    ));
    b.calc(daily, Mul, days, |e| {
        format!("In {days} days {} reads {e} pages.", p.name)
    })?;
    let left = b.calc(pages, Sub, read, |e| {
        format!("{} still has {e} pages to read.", p.she_cap())
    })?;
    let mut ask = format!("How many pages does {} still have to read?", p.name);
    if n >= 3 {
        let pace = d.divisor(left, 10, 60)?;
        b.fact(format!("After that {} reads {pace} pages a day.", p.she()));
        let more = b.calc(left, Div, pace, |e| {
            format!("{} needs {e} more days to finish the book.", p.she_cap())
        })?;
        ask = format!(
            "How many more days does {} need to finish the book?",
            p.name
        );
        if n >= 4 {
            b.calc(days, Add, more, |e| {
                format!("{} reads for {e} days in all.", p.she_cap())
            })?;
            ask = format!(
                "How many days does {} spend reading the book in all?",
                p.name
            );
        }
    }
    b.finish(ask)
}

fn eggs(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let (hens, lays) = (d.int(4, 20), d.int(3, 7));
    let mut b = Builder::default();
    b.fact(format!(
        "{} has {hens} hens, and each hen lays {lays} eggs a week.",
        p.name
    ));
    let mut count = b.calc(hens, Mul, lays, |e| {
        format!("The hens lay {e} eggs a week.")
    })?;
    let baking = n >= 3 || d.coin();
    let cartons = n >= 3 || !baking;
    let size = d.pick(&[6, 10, 12])?;
    let mut ask = String::new();
    if baking {
        let used = if cartons {
            let r = count % size;
            (if r == 0 { size } else { r }) + size * d.int(0, 1)
        } else {
            d.int(2, (count / 3).max(2))
        };
        b.fact(format!(
            "{} uses {used} eggs a week for baking.",
            p.she_cap()
        ));
        count = b.calc(count, Sub, used, |e| {
            format!("That leaves {e} eggs a week.")
        })?;
        ask = "How many eggs are left each week?".to_owned();
    }
    if cartons {
        let what = if baking { "the rest" } else { "all the eggs" };
        b.fact(format!(
            "{} sells {what} in cartons of {size}.",
            p.she_cap()
        ));
        count = b.calc(count, Div, size, |e| {
            format!("{} fills {e} cartons.", p.she_cap())
        })?;
        ask = format!("How many cartons does {} fill each week?", p.name);
    }
    if n >= 4 {
        let price = d.int(2, 6);
        b.fact(format!("Each carton sells for ${price}."));
        count = b.calc(count, Mul, price, |e| {
            format!("{} earns {e} dollars a week.", p.she_cap())
        })?;
        ask = format!("How many dollars does {} earn each week?", p.name);
    }
    if n >= 5 {
        let feed = d.int(1, (count * 2 / 3).max(1));
        b.fact(format!("Chicken feed costs {} ${feed} a week.", p.her()));
        b.calc(count, Sub, feed, |e| {
            format!("{} profit is {e} dollars a week.", p.poss_cap())
        })?;
        ask = format!("How many dollars of profit does {} make each week?", p.name);
    }
    b.finish(ask)
}

fn pies(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let fruit = d.pick(&["apples", "pears", "peaches", "plums"])?;
    let (bags, per) = (d.int(2, 6), d.int(5, 12));
    let mut b = Builder::default();
    b.fact(format!(
        "{} buys {bags} bags of {fruit} with {per} {fruit} in each bag.",
        p.name
    ));
    let mut have = b.calc(bags, Mul, per, |e| format!("{} has {e} {fruit}.", p.name))?;
    let snack = n >= 3 || d.coin();
    let bake = n >= 3 || !snack;
    let need = d.int(3, 8);
    let mut ask = String::new();
    if snack {
        let eaten = if bake {
            let r = have % need;
            (if r == 0 { need } else { r }) + need * d.int(0, 1)
        } else {
            d.int(1, 5)
        };
        if eaten >= have {
            return None;
        }
        b.fact(format!(
            "{} eats {eaten} {fruit} on the way home.",
            p.she_cap()
        ));
        have = b.calc(have, Sub, eaten, |e| {
            format!("After eating some, {} has {e} {fruit}.", p.she())
        })?;
        ask = format!("How many {fruit} does {} have now?", p.name);
    }
    if bake {
        b.fact(format!("Each pie needs {need} {fruit}."));
        have = b.calc(have, Div, need, |e| {
            format!("{} can bake {e} pies.", p.she_cap())
        })?;
        ask = format!("How many pies can {} bake with all of them?", p.name);
    }
    if n >= 4 {
        let slices = d.int(4, 10);
        b.fact(format!(
            "{} cuts each pie into {slices} slices.",
            p.she_cap()
        ));
        have = b.calc(have, Mul, slices, |e| format!("The pies make {e} slices."))?;
        ask = "How many slices do the pies make?".to_owned();
    }
    if n >= 5 {
        let eaten = d.int(1, have.saturating_sub(1).max(1));
        b.fact(format!("{} guests eat {eaten} slices.", p.poss_cap()));
        b.calc(have, Sub, eaten, |e| {
            format!("There are {e} slices left over.")
        })?;
        ask = "How many slices are left over?".to_owned();
    }
    b.finish(ask)
}

fn tickets(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let club = d.pick(&["drama club", "choir", "chess club", "art club", "band"])?;
    let mut b = Builder::default();
    let (adults, price) = (d.int(10, 60), d.int(4, 12));
    let mut money;
    if n >= 3 {
        let (kids, kid_price) = (d.int(10, 60), d.int(2, price.saturating_sub(1).max(2)));
        b.fact(format!(
            "{}'s {club} sells {adults} adult tickets for ${price} each and {kids} child tickets for ${kid_price} each.",
            p.name
        ));
        let a = b.calc(adults, Mul, price, |e| {
            format!("Adult tickets bring in {e} dollars.")
        })?;
        let c = b.calc(kids, Mul, kid_price, |e| {
            format!("Child tickets bring in {e} dollars.")
        })?;
        money = b.calc(a, Add, c, |e| {
            format!("The tickets bring in {e} dollars in all.")
        })?;
    } else {
        b.fact(format!(
            "{}'s {club} sells {adults} tickets for ${price} each.",
            p.name
        ));
        money = b.calc(adults, Mul, price, |e| {
            format!("The tickets bring in {e} dollars.")
        })?;
    }
    let mut ask = "How many dollars do the tickets bring in?".to_owned();
    let charities = d.int(2, 5);
    if n == 2 || n >= 4 {
        let costs = if n >= 5 {
            let r = money % charities;
            (if r == 0 { charities } else { r }) + charities * d.int(2, 20)
        } else {
            d.int(10, (money * 2 / 3).max(10))
        };
        let thing = d.pick(&[
            "costumes",
            "stage lights",
            "printed programs",
            "hall rental",
        ])?;
        b.fact(format!("The {thing} cost ${costs}."));
        money = b.calc(money, Sub, costs, |e| {
            format!("After paying for the {thing}, the {club} has {e} dollars.")
        })?;
        ask = format!("How many dollars does the {club} have after paying for the {thing}?");
    }
    if n >= 5 {
        b.fact(format!(
            "The {club} gives the rest equally to {charities} charities."
        ));
        b.calc(money, Div, charities, |e| {
            format!("Each charity gets {e} dollars.")
        })?;
        ask = "How many dollars does each charity get?".to_owned();
    }
    b.finish(ask)
}

fn basketball(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let mate = d.other_person(p)?;
    let (games, points) = (d.int(2, 8), d.int(6, 25));
    let mut b = Builder::default();
    b.fact(format!(
        "{} plays {games} basketball games and scores {points} points in each game.",
        p.name
    ));
    let first = b.calc(games, Mul, points, |e| {
        format!("{} scores {e} points in those games.", p.name)
    })?;
    let last = d.int(5, 30);
    b.fact(format!(
        "In the next game {} scores {last} points.",
        p.she()
    ));
    let total = b.calc(first, Add, last, |e| {
        format!("{} scores {e} points in all.", p.she_cap())
    })?;
    let mut ask = format!("How many points does {} score in all?", p.name);
    if n >= 3 {
        let fewer = d.int(3, (total / 2).max(3));
        b.fact(format!(
            "{} teammate {} scores {fewer} fewer points than {} in all.",
            p.poss_cap(),
            mate.name,
            p.name
        ));
        let theirs = b.calc(total, Sub, fewer, |e| {
            format!("{} scores {e} points.", mate.name)
        })?;
        ask = format!("How many points does {} score?", mate.name);
        if n >= 4 {
            let together = b.calc(total, Add, theirs, |e| {
                format!("Together they score {e} points.")
            })?;
            ask = format!(
                "How many points do {} and {} score together?",
                p.name, mate.name
            );
            if n >= 5 {
                let per = d.divisor(together, 3, 12)?;
                b.fact(format!(
                    "The coach gives the two of them one sticker for every {per} points they score together."
                ));
                b.calc(together, Div, per, |e| {
                    format!("The coach gives them {e} stickers.")
                })?;
                ask = "How many stickers does the coach give them?".to_owned();
            }
        }
    }
    b.finish(ask)
}

fn pizza(d: &mut Draw<'_>, n: usize) -> Option<Story> {
    let p = d.person()?;
    let friend = d.other_person(p)?;
    let (pizzas, slices) = (d.int(3, 10), d.pick(&[6, 8, 10, 12])?);
    let mut b = Builder::default();
    b.fact(format!(
        "{} orders {pizzas} pizzas, and each pizza is cut into {slices} slices.",
        p.name
    ));
    let total = b.calc(pizzas, Mul, slices, |e| format!("There are {e} slices."))?;
    let eaten = if n >= 3 {
        let (guests, each) = (d.int(3, 12), d.int(1, 3));
        b.fact(format!(
            "At the party {guests} guests each eat {each} slices."
        ));
        b.calc(guests, Mul, each, |e| format!("The guests eat {e} slices."))?
    } else {
        let eaten = d.int(5, total.saturating_sub(1).max(5));
        b.fact(format!("The guests eat {eaten} slices."));
        eaten
    };
    let mut left = b.calc(total, Sub, eaten, |e| format!("That leaves {e} slices."))?;
    let mut ask = "How many slices are left?".to_owned();
    if n >= 4 {
        let size = d.divisor(left, 2, 6)?;
        b.fact(format!(
            "{} packs the leftover slices into boxes of {size}.",
            p.name
        ));
        left = b.calc(left, Div, size, |e| {
            format!("{} fills {e} boxes.", p.she_cap())
        })?;
        ask = format!("How many boxes does {} fill?", p.name);
    }
    if n >= 5 {
        let given = d.int(1, left.saturating_sub(1).max(1));
        b.fact(format!(
            "{} gives {given} of the boxes to {}.",
            p.she_cap(),
            friend.name
        ));
        b.calc(left, Sub, given, |e| {
            format!("{} keeps {e} boxes.", p.she_cap())
        })?;
        ask = format!("How many boxes does {} keep?", p.name);
    }
    b.finish(ask)
}
