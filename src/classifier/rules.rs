//! Rule scorer: the cold-start and fallback router. Weighted keyword (unigram + bigram, main
//! languages) and structure features per category, a difficulty estimate for the tier; no model,
//! a few microseconds per prompt. The model-based path lives in `model`; `decide` picks between them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use super::input::{ClassifyInput, Role};
use super::{detect_override, Category};

/// What the rule scorer concluded. `scores` are per-category logits in `Category::ALL` order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleScore {
    pub category: Category,
    pub tier: u8,
    /// Softmax probability of the winning category, in 0..=1.
    pub confidence: f32,
    pub scores: [f32; 8],
}

/// Bytes scanned from the head and tail of the latest user turn; bounds the cost on huge prompts.
const LATEST_HEAD_BYTES: usize = 4096;
const LATEST_TAIL_BYTES: usize = 1024;
/// Bytes scanned per earlier user turn / system prompt, and their weights relative to the latest turn.
const CONTEXT_BYTES: usize = 512;
const HISTORY_WEIGHT: f32 = 0.35;
const SYSTEM_WEIGHT: f32 = 0.15;
const MAX_HISTORY_TURNS: usize = 3;
/// Most keyword evidence the system prompts may add to one dimension.
const SYSTEM_MAX_EVIDENCE: f32 = 1.0;

// Category indices, shorter to read in the tables.
const SC: usize = 0;
const GE: usize = 1;
const CO: usize = 2;
const RE: usize = 3;
const CR: usize = 4;
const DA: usize = 5;
const AG: usize = 6;
/// Index of the difficulty accumulator in `Features::kw` (after the 8 categories).
const HARD: usize = 8;

/// Keyword table: word or "word word" bigram -> (dimension, weight). Lower case.
const KEYWORDS: &[(&str, usize, f32)] = &[
    // --- simple chat: greetings, small talk about the assistant, yes/no/thanks
    ("hi", SC, 1.5),
    ("hello", SC, 1.5),
    ("hey", SC, 1.5),
    ("thanks", SC, 1.5),
    ("thank", SC, 1.2),
    ("bye", SC, 2.0),
    ("goodbye", SC, 2.0),
    ("joke", SC, 2.0),
    ("jokes", SC, 2.0),
    ("funny", SC, 1.0),
    ("hobbies", SC, 2.0),
    ("hobby", SC, 2.0),
    ("pets", SC, 1.5),
    ("pet", SC, 1.0),
    ("your name", SC, 2.5),
    ("are you", SC, 1.5),
    ("you a", SC, 0.8),
    ("about you", SC, 1.5),
    ("how old", SC, 1.0),
    ("you from", SC, 2.0),
    ("made you", SC, 2.5),
    ("created you", SC, 2.5),
    ("you work", SC, 1.5),
    ("your boss", SC, 2.0),
    ("bot", SC, 1.5),
    ("human", SC, 0.8),
    ("robot", SC, 0.8),
    ("fun fact", SC, 3.0),
    ("meaning of", SC, 0.8),
    ("of life", SC, 2.0),
    ("ask you", SC, 2.0),
    ("yes", SC, 1.2),
    ("no", SC, 0.4),
    ("maybe", SC, 1.2),
    ("correct", SC, 0.5),
    ("true", SC, 0.3),
    ("good morning", SC, 2.0),
    ("how are", SC, 1.5),
    ("nice to", SC, 1.5),
    ("you doing", SC, 1.5),
    ("hola", SC, 2.0),
    ("gracias", SC, 2.0),
    ("bonjour", SC, 2.0),
    ("merci", SC, 2.0),
    ("salut", SC, 1.5),
    ("hallo", SC, 2.0),
    ("danke", SC, 2.0),
    ("ciao", SC, 2.0),
    ("grazie", SC, 2.0),
    ("olá", SC, 2.0),
    ("obrigado", SC, 2.0),
    ("привет", SC, 2.0),
    ("спасибо", SC, 2.0),
    ("xin chào", SC, 2.0),
    // --- agentic without tools: assistant actions (timers, messages, music, bookings, banking)
    ("set", AG, 0.8),
    ("timer", AG, 2.5),
    ("alarm", AG, 2.5),
    ("remind", AG, 2.5),
    ("reminder", AG, 2.5),
    ("reminders", AG, 2.5),
    ("play", AG, 1.2),
    ("song", AG, 2.0),
    ("music", AG, 1.5),
    ("playlist", AG, 2.5),
    ("volume", AG, 2.5),
    ("next song", AG, 2.0),
    ("text", AG, 0.6),
    ("call", AG, 1.0),
    ("message", AG, 0.5),
    ("book", AG, 1.0),
    ("reserve", AG, 1.5),
    ("reservation", AG, 2.0),
    ("flight", AG, 1.5),
    ("hotel", AG, 1.0),
    ("uber", AG, 2.5),
    ("ride", AG, 0.8),
    ("order", AG, 0.6),
    ("cancel", AG, 1.5),
    ("schedule", AG, 1.2),
    ("meeting", AG, 1.2),
    ("calendar", AG, 2.0),
    ("todo", AG, 2.0),
    ("to do", AG, 1.0),
    ("shopping list", AG, 3.0),
    ("my list", AG, 2.0),
    ("add", AG, 0.5),
    ("lights", AG, 2.0),
    ("turn on", AG, 2.0),
    ("turn off", AG, 2.0),
    ("thermostat", AG, 2.5),
    ("transfer", AG, 1.5),
    ("pay", AG, 1.0),
    ("bill", AG, 0.8),
    ("account", AG, 1.0),
    ("card", AG, 0.8),
    ("credit", AG, 0.8),
    ("freeze", AG, 1.5),
    ("lost", AG, 0.5),
    ("fraud", AG, 2.0),
    ("balance", AG, 1.0),
    ("rewards", AG, 1.5),
    ("points", AG, 0.5),
    ("location", AG, 1.5),
    ("share", AG, 0.6),
    ("find my", AG, 2.0),
    ("my phone", AG, 2.0),
    ("pto", AG, 2.5),
    ("vacation", AG, 0.8),
    ("checks", AG, 1.5),
    ("rental", AG, 1.5),
    ("rent", AG, 0.8),
    ("car", AG, 0.5),
    ("oil", AG, 0.5),
    ("tire", AG, 1.0),
    ("visa", AG, 0.8),
    ("please", AG, 0.2),
    ("can you", AG, 0.6),
    ("could you", AG, 0.4),
    ("my", AG, 0.4),
    ("i need", AG, 0.3),
    ("for me", AG, 0.8),
    ("weather", AG, 1.5),
    // --- coding
    ("code", CO, 2.5),
    ("function", CO, 2.5),
    ("python", CO, 3.0),
    ("javascript", CO, 3.0),
    ("typescript", CO, 3.0),
    ("java", CO, 2.5),
    ("rust", CO, 2.0),
    ("golang", CO, 3.0),
    ("c++", CO, 3.0),
    ("sql", CO, 3.0),
    ("html", CO, 2.5),
    ("css", CO, 2.5),
    ("bash", CO, 2.5),
    ("script", CO, 2.0),
    ("program", CO, 2.0),
    ("programming", CO, 2.5),
    ("implement", CO, 2.0),
    ("algorithm", CO, 1.5),
    ("debug", CO, 3.0),
    ("bug", CO, 2.5),
    ("compile", CO, 3.0),
    ("compiler", CO, 3.0),
    ("error", CO, 1.0),
    ("exception", CO, 2.5),
    ("api", CO, 1.5),
    ("class", CO, 1.0),
    ("method", CO, 1.0),
    ("array", CO, 1.5),
    ("string", CO, 1.2),
    ("list", CO, 0.5),
    ("tuple", CO, 2.0),
    ("tuples", CO, 2.0),
    ("dict", CO, 2.0),
    ("dictionary", CO, 1.0),
    ("regex", CO, 3.0),
    ("def", CO, 3.0),
    ("return", CO, 1.5),
    ("returns", CO, 1.0),
    ("import", CO, 2.0),
    ("assert", CO, 3.0),
    ("lambda", CO, 2.0),
    ("async", CO, 2.0),
    ("docker", CO, 2.5),
    ("kubernetes", CO, 2.5),
    ("git", CO, 2.0),
    ("repository", CO, 1.5),
    ("unity", CO, 1.5),
    ("react", CO, 2.5),
    ("frontend", CO, 2.5),
    ("backend", CO, 2.5),
    ("database", CO, 1.5),
    ("query", CO, 1.0),
    ("refactor", CO, 3.0),
    ("write a function", CO, 3.0),
    ("a function", CO, 1.5),
    ("python function", CO, 3.0),
    ("the code", CO, 1.5),
    ("this code", CO, 2.0),
    ("following code", CO, 2.0),
    ("integer", CO, 0.8),
    ("integers", CO, 0.6),
    ("variable", CO, 1.0),
    ("loop", CO, 1.5),
    ("recursion", CO, 2.0),
    ("recursive", CO, 2.0),
    ("código", CO, 2.5),
    ("función", CO, 2.5),
    ("programa", CO, 1.5),
    ("fonction", CO, 2.5),
    ("programme", CO, 1.2),
    ("funktion", CO, 2.5),
    ("programmieren", CO, 2.5),
    ("funkce", CO, 2.5),
    ("kód", CO, 2.5),
    ("код", CO, 2.5),
    ("функцию", CO, 2.5),
    ("функция", CO, 2.5),
    ("программу", CO, 2.5),
    ("mã", CO, 1.0),
    ("hàm", CO, 1.5),
    // --- reasoning: math and logic
    ("calculate", RE, 2.0),
    ("compute", RE, 1.5),
    ("solve", RE, 2.0),
    ("equation", RE, 2.5),
    ("equations", RE, 2.5),
    ("prove", RE, 3.0),
    ("proof", RE, 3.0),
    ("theorem", RE, 2.5),
    ("integral", RE, 3.0),
    ("derivative", RE, 3.0),
    ("probability", RE, 2.0),
    ("matrix", RE, 1.5),
    ("triangle", RE, 2.0),
    ("circle", RE, 1.0),
    ("area", RE, 1.0),
    ("perimeter", RE, 2.0),
    ("remainder", RE, 2.0),
    ("divisible", RE, 2.5),
    ("prime", RE, 1.5),
    ("sum", RE, 1.2),
    ("product", RE, 0.5),
    ("how many", RE, 2.0),
    ("how much", RE, 1.8),
    ("total", RE, 1.2),
    ("each", RE, 0.8),
    ("per", RE, 0.8),
    ("twice", RE, 1.5),
    ("half", RE, 1.0),
    ("times", RE, 0.8),
    ("percent", RE, 1.2),
    ("cost", RE, 0.8),
    ("costs", RE, 1.0),
    ("dollars", RE, 1.2),
    ("earn", RE, 1.2),
    ("earns", RE, 1.5),
    ("pays", RE, 1.0),
    ("spend", RE, 0.8),
    ("buys", RE, 1.5),
    ("bought", RE, 1.0),
    ("sells", RE, 1.5),
    ("minutes", RE, 0.5),
    ("hours", RE, 0.5),
    ("years old", RE, 1.0),
    ("older", RE, 0.8),
    ("younger", RE, 1.5),
    ("riddle", RE, 2.5),
    ("puzzle", RE, 2.0),
    ("logic", RE, 1.5),
    ("step by", RE, 1.5),
    ("reasoning", RE, 1.5),
    ("calcula", RE, 2.0),
    ("calcule", RE, 2.0),
    ("calculer", RE, 2.0),
    ("berechne", RE, 2.5),
    ("beweise", RE, 3.0),
    ("démontrer", RE, 3.0),
    ("démontrez", RE, 3.0),
    ("demuestra", RE, 3.0),
    ("ecuación", RE, 2.5),
    ("équation", RE, 2.5),
    ("gleichung", RE, 2.5),
    ("vypočítej", RE, 2.5),
    ("докажите", RE, 3.0),
    ("докажи", RE, 3.0),
    ("вычислите", RE, 2.5),
    ("уравнение", RE, 2.5),
    ("phương trình", RE, 3.0),
    ("chứng minh", RE, 3.0),
    ("tính", RE, 1.5),
    // --- creative
    ("story", CR, 3.0),
    ("poem", CR, 3.5),
    ("poems", CR, 3.5),
    ("haiku", CR, 3.5),
    ("sonnet", CR, 3.5),
    ("lyrics", CR, 3.0),
    ("limerick", CR, 3.5),
    ("fiction", CR, 2.5),
    ("fictional", CR, 3.0),
    ("novel", CR, 1.5),
    ("character", CR, 1.5),
    ("characters", CR, 1.5),
    ("scene", CR, 2.5),
    ("dialogue", CR, 2.0),
    ("screenplay", CR, 3.0),
    ("script for", CR, 1.0),
    ("narrative", CR, 2.0),
    ("imagine", CR, 1.2),
    ("roleplay", CR, 2.5),
    ("creative", CR, 2.0),
    ("compose", CR, 1.5),
    ("blog", CR, 2.0),
    ("slogan", CR, 2.5),
    ("headline", CR, 1.5),
    ("catchy", CR, 2.0),
    ("rap", CR, 2.0),
    ("verse", CR, 2.0),
    ("rhyme", CR, 2.5),
    ("koan", CR, 3.0),
    ("essay", CR, 1.5),
    ("tale", CR, 2.5),
    ("continue the", CR, 2.0),
    ("write a", CR, 0.8),
    ("once upon", CR, 3.0),
    ("plot", CR, 1.0),
    ("historia", CR, 2.0),
    ("cuento", CR, 3.0),
    ("poema", CR, 3.5),
    ("histoire", CR, 2.0),
    ("poème", CR, 3.5),
    ("conte", CR, 2.5),
    ("dialogue en", CR, 1.0),
    ("geschichte", CR, 2.0),
    ("gedicht", CR, 3.5),
    ("příběh", CR, 3.0),
    ("báseň", CR, 3.5),
    ("scénář", CR, 3.0),
    ("рассказ", CR, 3.0),
    ("стихотворение", CR, 3.5),
    ("историю", CR, 2.0),
    ("câu chuyện", CR, 3.0),
    ("bài thơ", CR, 3.5),
    ("storia", CR, 2.0),
    ("poesia", CR, 3.5),
    ("história", CR, 2.0),
    // --- data extraction / transformation
    ("extract", DA, 3.0),
    ("extraction", DA, 3.0),
    ("json", DA, 2.0),
    ("yaml", DA, 3.0),
    ("csv", DA, 2.5),
    ("schema", DA, 2.0),
    ("table", DA, 1.2),
    ("columns", DA, 2.0),
    ("fields", DA, 1.5),
    ("parse", DA, 1.0),
    ("entities", DA, 3.0),
    ("summarize", DA, 2.0),
    ("summary", DA, 1.5),
    ("bullet", DA, 2.5),
    ("classify", DA, 1.5),
    ("categorize", DA, 2.0),
    ("log", DA, 1.0),
    ("invoice", DA, 3.0),
    ("pull out", DA, 3.0),
    ("list of", DA, 0.5),
    ("the following text", DA, 2.0),
    ("following text", DA, 2.0),
    ("passage", DA, 1.5),
    ("from this", DA, 1.0),
    ("below", DA, 0.8),
    ("format", DA, 1.0),
    ("fill", DA, 1.0),
    ("identify all", DA, 2.5),
    ("rewrite", DA, 1.0),
    ("convert", DA, 0.8),
    ("normalize", DA, 1.5),
    ("extrae", DA, 3.0),
    ("extraire", DA, 3.0),
    ("extrahiere", DA, 3.0),
    ("resumen", DA, 1.5),
    ("résume", DA, 1.5),
    ("zusammenfassung", DA, 1.5),
    ("извлеки", DA, 3.0),
    // --- general knowledge
    ("what is", GE, 0.6),
    ("which of", GE, 2.0),
    ("the following", GE, 1.0),
    ("explain", GE, 1.2),
    ("describe", GE, 1.2),
    ("why", GE, 0.8),
    ("history", GE, 0.8),
    ("define", GE, 1.5),
    ("definition", GE, 2.0),
    ("meaning", GE, 0.8),
    ("mean", GE, 0.6),
    ("translate", GE, 2.0),
    ("spell", GE, 2.0),
    ("calories", GE, 1.5),
    ("nutrition", GE, 1.5),
    ("difference between", GE, 1.5),
    ("statement", GE, 1.0),
    ("answer", GE, 0.5),
    ("country", GE, 0.8),
    ("president", GE, 1.0),
    ("recipe", GE, 1.0),
    ("cook", GE, 0.8),
    ("credit score", GE, 1.5),
    ("improve", GE, 0.5),
    // --- second round, from the dev confusions (clinc general intents, templated extraction,
    // foreign-language math and creative requests)
    ("do you say", GE, 3.0),
    ("you say", GE, 1.5),
    ("how long", GE, 1.5),
    ("expire", GE, 2.0),
    ("expires", GE, 2.0),
    ("freezer", GE, 2.0),
    ("fridge", GE, 2.0),
    ("tourist", GE, 2.0),
    ("attractions", GE, 2.0),
    ("carry", GE, 1.5),
    ("restrictions", GE, 1.5),
    ("instead of", GE, 1.5),
    ("substitute", GE, 2.0),
    ("sub", GE, 1.0),
    ("nutritional", GE, 2.0),
    ("pounds", GE, 0.8),
    ("kilos", GE, 1.5),
    ("inches", GE, 1.0),
    ("feet", GE, 0.5),
    ("gallon", GE, 1.5),
    ("liters", GE, 1.5),
    ("tires", GE, 1.0),
    ("preparation", GE, 1.0),
    ("dish", GE, 1.0),
    ("vaccines", GE, 2.0),
    ("plug", GE, 2.0),
    ("gas", GE, 0.8),
    ("instructions", GE, 0.8),
    ("insurance", GE, 1.0),
    ("tl", DA, 2.0),
    ("dr", DA, 1.0),
    ("action items", DA, 3.0),
    ("triples", DA, 3.0),
    ("markdown", DA, 2.5),
    ("sorted by", DA, 2.0),
    ("named entities", DA, 3.0),
    ("this passage", DA, 2.5),
    ("this email", DA, 2.5),
    ("this log", DA, 3.0),
    ("return only", DA, 2.0),
    ("as json", DA, 3.0),
    ("as yaml", DA, 3.0),
    ("bullet list", DA, 3.0),
    ("one sentence", DA, 2.0),
    ("entity", DA, 2.0),
    ("paragraph", DA, 0.8),
    ("following paragraph", DA, 2.5),
    ("stated facts", DA, 3.0),
    ("задача", RE, 2.5),
    ("вероятность", RE, 3.0),
    ("найдите", RE, 2.5),
    ("найти", RE, 1.5),
    ("решите", RE, 3.0),
    ("сколько", RE, 2.0),
    ("скорость", RE, 2.0),
    ("силой", RE, 1.5),
    ("сила", RE, 1.5),
    ("cuántos", RE, 2.0),
    ("cuánto", RE, 1.5),
    ("calcular", RE, 2.5),
    ("probabilidad", RE, 3.0),
    ("suma", RE, 1.5),
    ("longitud", RE, 1.5),
    ("combien", RE, 2.0),
    ("calculez", RE, 2.5),
    ("probabilité", RE, 3.0),
    ("wie viele", RE, 2.0),
    ("wahrscheinlichkeit", RE, 3.0),
    ("berechnen", RE, 2.5),
    ("bao nhiêu", RE, 2.0),
    ("isomorphic", RE, 2.5),
    ("vertices", RE, 2.5),
    ("permutations", RE, 2.5),
    ("combinations", RE, 1.5),
    ("graph", RE, 1.0),
    ("fertility", RE, 1.0),
    ("average", RE, 1.0),
    ("dialog", CR, 2.5),
    ("transcript", CR, 1.5),
    ("novelist", CR, 3.0),
    ("stories", CR, 3.0),
    ("trailer", CR, 2.5),
    ("instagram", CR, 2.5),
    ("post", CR, 1.0),
    ("advertisement", CR, 2.5),
    ("ad", CR, 1.0),
    ("caption", CR, 2.0),
    ("tweet", CR, 2.0),
    ("speech", CR, 1.5),
    ("toast", CR, 2.0),
    ("напиши", CR, 2.5),
    ("придумай", CR, 3.0),
    ("диалог", CR, 3.0),
    ("текст", CR, 1.0),
    ("сказочных", CR, 3.0),
    ("сказку", CR, 3.5),
    ("трейлер", CR, 3.0),
    ("viết", CR, 2.0),
    ("quảng cáo", CR, 2.5),
    ("sceneggiatura", CR, 3.5),
    ("escribe", CR, 1.5),
    ("écris", CR, 1.5),
    ("écrire", CR, 1.0),
    ("schreibe", CR, 1.5),
    ("crea", CR, 1.0),
    ("napiš", CR, 2.0),
    ("vymysli", CR, 3.0),
    ("okay", SC, 2.5),
    ("ok", SC, 2.5),
    ("ya", SC, 2.5),
    ("yeah", SC, 2.5),
    ("yep", SC, 2.5),
    ("right", SC, 1.2),
    ("you re", SC, 2.0),
    ("that s", SC, 0.8),
    ("purpose", SC, 2.0),
    ("exist", SC, 1.5),
    ("life", SC, 1.0),
    ("lifes", SC, 2.0),
    ("alive", SC, 1.5),
    ("you think", SC, 2.0),
    ("it all", SC, 1.5),
    ("next", AG, 1.5),
    ("track", AG, 2.0),
    ("skip", AG, 2.0),
    ("appointment", AG, 2.0),
    ("engine", AG, 1.5),
    ("my bank", AG, 2.5),
    ("bank", AG, 1.0),
    ("wake me", AG, 3.0),
    ("the phone", AG, 1.5),
    ("travel plans", AG, 1.5),
    ("request", AG, 0.5),
    ("вычислить", RE, 2.5),
    ("посчитай", RE, 2.5),
    ("calculus", RE, 2.5),
    ("epimorphism", RE, 2.5),
    ("digit", RE, 1.5),
    ("km", RE, 1.0),
    ("radiation", RE, 1.0),
    ("physics", RE, 1.0),
    // --- difficulty (tier) cues
    ("prove", HARD, 2.0),
    ("proof", HARD, 2.0),
    ("optimize", HARD, 1.5),
    ("architecture", HARD, 1.5),
    ("design", HARD, 0.8),
    ("complexity", HARD, 1.5),
    ("distributed", HARD, 1.5),
    ("concurrency", HARD, 1.5),
    ("thread", HARD, 0.8),
    ("analyze", HARD, 1.0),
    ("analysis", HARD, 1.0),
    ("compare", HARD, 0.6),
    ("tradeoffs", HARD, 1.5),
    ("trade offs", HARD, 1.5),
    ("step by", HARD, 1.0),
    ("detailed", HARD, 0.8),
    ("comprehensive", HARD, 1.2),
    ("research", HARD, 0.8),
    ("integral", HARD, 1.5),
    ("theorem", HARD, 1.5),
    ("rigorous", HARD, 2.0),
    ("derive", HARD, 1.5),
    ("scalable", HARD, 1.2),
    ("performance", HARD, 0.8),
    ("security", HARD, 0.8),
    ("legal", HARD, 0.8),
    ("medical", HARD, 0.8),
    ("strategy", HARD, 0.8),
];

/// Substring cues for scripts without spaces between words (Chinese, Japanese): checked only
/// when the text has such characters.
const CJK_CUES: &[(&str, usize, f32)] = &[
    ("代码", CO, 3.0),
    ("函数", CO, 3.0),
    ("程序", CO, 2.5),
    ("编程", CO, 3.0),
    ("算法", CO, 2.0),
    ("コード", CO, 3.0),
    ("関数", CO, 3.0),
    ("プログラム", CO, 2.5),
    ("实现", CO, 1.0),
    ("证明", RE, 3.0),
    ("証明", RE, 3.0),
    ("计算", RE, 2.5),
    ("計算", RE, 2.5),
    ("方程", RE, 2.5),
    ("求", RE, 0.8),
    ("矩阵", RE, 1.5),
    ("几何", RE, 2.0),
    ("概率", RE, 2.0),
    ("多少", RE, 1.5),
    ("故事", CR, 3.0),
    ("小说", CR, 2.5),
    ("诗", CR, 2.5),
    ("詩", CR, 2.5),
    ("物語", CR, 3.0),
    ("剧本", CR, 3.0),
    ("提取", DA, 3.0),
    ("抽出", DA, 3.0),
    ("摘要", DA, 2.0),
    ("要約", DA, 2.0),
    ("表格", DA, 2.0),
    ("总结", DA, 1.5),
    ("話", CR, 1.5),
    ("比例", RE, 1.5),
    ("写", CR, 0.5),
    ("你好", SC, 2.5),
    ("谢谢", SC, 2.5),
    ("こんにちは", SC, 2.5),
    ("ありがとう", SC, 2.5),
    ("是什么", GE, 1.0),
    ("解释", GE, 1.5),
    ("とは", GE, 1.0),
    ("设置", AG, 1.0),
    ("提醒", AG, 2.5),
    ("闹钟", AG, 2.5),
    ("播放", AG, 2.5),
];

/// FNV-1a: the keys are short words; SipHash's DoS resistance buys nothing for a static table.
#[derive(Default)]
struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// One keyword may feed several dimensions ("prove" is reasoning and difficulty).
type Table = HashMap<&'static [u8], Vec<(usize, f32)>, BuildHasherDefault<Fnv>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Table::default();
        for &(k, dim, w) in KEYWORDS {
            t.entry(k.as_bytes()).or_default().push((dim, w));
        }
        t
    })
}

/// Feature accumulator over one or more weighted text segments.
#[derive(Default, Clone, Copy)]
struct Features {
    /// Keyword evidence per category, plus HARD at index 8.
    kw: [f32; 9],
    bytes: f32,
    words: f32,
    questions: f32,
    newlines: f32,
    code_punct: f32,
    fences: f32,
    indented_lines: f32,
    digits: f32,
    math_ops: f32,
    latex: f32,
    dollars: f32,
    mc_options: f32,
    json_like: f32,
    non_ascii: f32,
}

impl Features {
    fn scan(&mut self, text: &str, weight: f32) {
        let bytes = text.as_bytes();
        self.bytes += weight * bytes.len() as f32;
        // Byte-level structure pass.
        let mut at_line_start = true;
        let mut leading_spaces = 0u32;
        let mut prev = b'\n';
        let (mut punct, mut digits, mut ops, mut latex, mut nl, mut q, mut dollars) =
            (0u32, 0u32, 0u32, 0u32, 0u32, 0u32, 0u32);
        let (mut indented, mut mc, mut non_ascii, mut json_like) = (0u32, 0u32, 0u32, 0u32);
        for (i, &b) in bytes.iter().enumerate() {
            if at_line_start {
                if b == b' ' {
                    leading_spaces += 1;
                    prev = b;
                    continue;
                }
                if leading_spaces >= 4 && b != b'\n' {
                    indented += 1;
                }
                // "A. ", "B) " multiple-choice options at line start.
                if matches!(b, b'A'..=b'D') && matches!(bytes.get(i + 1), Some(b'.') | Some(b')')) {
                    mc += 1;
                }
                at_line_start = false;
            }
            match b {
                b'\n' => {
                    nl += 1;
                    at_line_start = true;
                    leading_spaces = 0;
                }
                b'{' | b'}' | b';' | b'[' | b']' => punct += 1,
                b'(' if prev.is_ascii_alphanumeric() || prev == b'_' => punct += 1,
                b'=' if matches!(bytes.get(i + 1), Some(b'=') | Some(b'>')) => punct += 1,
                b'-' if bytes.get(i + 1) == Some(&b'>') => punct += 1,
                b'_' if prev.is_ascii_alphanumeric() => punct += 1,
                b'0'..=b'9' => digits += 1,
                b'+' | b'*' | b'/' | b'^' | b'=' | b'<' | b'>' => ops += 1,
                b'\\' => latex += 1,
                b'$' => dollars += 1,
                b'?' => q += 1,
                b'"' if prev == b'{' || bytes.get(i + 1) == Some(&b':') => json_like += 1,
                0x80..=0xff if b >= 0xc0 => non_ascii += 1,
                _ => {}
            }
            prev = b;
        }
        let fences = text.matches("```").count() as f32;
        self.code_punct += weight * punct as f32;
        self.digits += weight * digits as f32;
        self.math_ops += weight * ops as f32;
        self.latex += weight * latex as f32;
        self.newlines += weight * nl as f32;
        self.questions += weight * q as f32;
        self.dollars += weight * dollars as f32;
        self.indented_lines += weight * indented as f32;
        self.mc_options += weight * mc as f32;
        self.non_ascii += weight * non_ascii as f32;
        self.json_like += weight * json_like as f32;
        self.fences += weight * fences;

        // Word pass: unigrams and bigrams looked up in the keyword table.
        let table = table();
        let mut word = [0u8; 48];
        let mut prev_word = [0u8; 48];
        let mut prev_len = 0usize;
        let mut pair = [0u8; 97];
        let mut words = 0u32;
        let mut it = text.char_indices().peekable();
        while let Some((_, c)) = it.next() {
            if !(c.is_alphanumeric() || c == '+') {
                continue;
            }
            // Collect one word, lower-cased, into `word` (longer words are not keywords).
            let mut len = 0usize;
            let mut too_long = false;
            let mut push = |ch: char, len: &mut usize| {
                for lc in ch.to_lowercase() {
                    let mut buf = [0u8; 4];
                    let s = lc.encode_utf8(&mut buf);
                    if *len + s.len() > word.len() {
                        too_long = true;
                        return;
                    }
                    word[*len..*len + s.len()].copy_from_slice(s.as_bytes());
                    *len += s.len();
                }
            };
            push(c, &mut len);
            while let Some(&(_, c2)) = it.peek() {
                if c2.is_alphanumeric() || c2 == '+' {
                    push(c2, &mut len);
                    it.next();
                } else {
                    break;
                }
            }
            words += 1;
            if too_long {
                prev_len = 0;
                continue;
            }
            let w = &word[..len];
            if let Some(hits) = table.get(w) {
                for &(dim, wt) in hits {
                    self.kw[dim] += weight * wt;
                }
            }
            if prev_len > 0 {
                let n = prev_len + 1 + len;
                pair[..prev_len].copy_from_slice(&prev_word[..prev_len]);
                pair[prev_len] = b' ';
                pair[prev_len + 1..n].copy_from_slice(w);
                if let Some(hits) = table.get(&pair[..n]) {
                    for &(dim, wt) in hits {
                        self.kw[dim] += weight * wt;
                    }
                }
            }
            prev_word[..len].copy_from_slice(w);
            prev_len = len;
        }
        self.words += weight * words as f32;

        if non_ascii > 0 && bytes.iter().any(|&b| b >= 0xe3) {
            for &(cue, dim, wt) in CJK_CUES {
                if text.contains(cue) {
                    self.kw[dim] += weight * wt;
                }
            }
            // CJK has no spaces: estimate words from characters so length cues still work.
            self.words += weight * (non_ascii as f32 / 2.0);
        }
        // Trigram phrases that bigrams cannot see.
        if text.len() < 200 {
            let lower_has = |p: &str| ascii_icontains(bytes, p.as_bytes());
            if lower_has("meaning of life") {
                self.kw[SC] += weight * 3.0;
            }
            if lower_has("are you a") {
                self.kw[SC] += weight * 1.5;
            }
        }
    }

    fn logits(&self) -> [f32; 8] {
        let mut s = [0f32; 8];
        s[..8].copy_from_slice(&self.kw[..8]);
        let words = self.words.max(1.0);
        let short = words <= 12.0;
        // Structure evidence.
        let code_density = (self.code_punct / words).min(1.0);
        s[CO] +=
            6.0 * self.fences.min(2.0) + 12.0 * code_density + 0.6 * self.indented_lines.min(10.0);
        let digit_density = self.digits / self.bytes.max(1.0);
        s[RE] += 40.0 * digit_density.min(0.1)
            + 0.25 * self.math_ops.min(16.0)
            + 0.5 * self.latex.min(10.0)
            + 0.8 * self.dollars.min(4.0);
        s[DA] += 1.5 * self.json_like.min(4.0);
        s[GE] += 1.0 + 0.8 * self.mc_options.min(4.0);
        // Short chit-chat and assistant commands are short; task prompts are long.
        if short {
            s[AG] += 0.3;
            // Unit questions ("how many inches in a foot") are general, not math problems.
            s[RE] -= 1.5;
        } else {
            s[SC] -= 1.0 + (words / 40.0).min(3.0);
            s[AG] -= 1.0 + (words / 40.0).min(3.0);
        }
        if words > 60.0 {
            s[GE] -= 0.5;
        }
        s[7] = -10.0; // transcription is decided by structure only
        s
    }

    /// Difficulty in 1..=4 from length, structure and keyword cues, given the category.
    fn tier(&self, category: Category) -> u8 {
        let words = self.words;
        let mut d = self.kw[HARD];
        d += match words {
            w if w < 15.0 => 0.0,
            w if w < 60.0 => 0.8,
            w if w < 200.0 => 1.6,
            _ => 2.4,
        };
        d += 0.3 * self.questions.min(4.0) + 0.3 * self.latex.min(8.0) + 0.5 * self.fences.min(2.0);
        if self.non_ascii > 20.0 {
            d += 0.5;
        }
        let base = match category {
            Category::SimpleChat | Category::Agentic | Category::Transcription => 1.0,
            Category::General | Category::Data => 1.3,
            Category::Coding => 1.8,
            // Multi-step math is where a weak model fails most (GSM8K: 65% vs 87% correct).
            Category::Reasoning => 2.3,
            Category::Creative => 3.0,
        };
        let t = base + d * 0.5;
        (t.round() as i32).clamp(1, 4) as u8
    }
}

fn ascii_icontains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Scores one conversation. The latest user turn (override prefix stripped) weighs 1; earlier
/// user turns and system prompts are scanned only partly and weigh less, so a long system prompt
/// cannot drown the user's request. Total work is bounded whatever the input size.
pub fn score(input: &ClassifyInput) -> RuleScore {
    let mut f = Features::default();
    let latest_idx = input.turns.iter().rposition(|t| t.role == Role::User);
    let latest = latest_idx
        .map(|i| input.turns[i].text)
        .or_else(|| input.turns.last().map(|t| t.text));
    if let Some(text) = latest {
        let text = match detect_override(text) {
            Some((_, n)) => &text[n..],
            None => text,
        };
        scan_bounded(&mut f, text, LATEST_HEAD_BYTES, LATEST_TAIL_BYTES, 1.0);
    }
    if let Some(li) = latest_idx {
        for t in input.turns[..li]
            .iter()
            .rev()
            .filter(|t| t.role == Role::User)
            .take(MAX_HISTORY_TURNS)
        {
            scan_bounded(&mut f, t.text, CONTEXT_BYTES, 0, HISTORY_WEIGHT);
        }
    }
    for s in input.system.iter().take(2) {
        // Structure counts of a system prompt say nothing about the request: keywords only.
        let mut sf = Features::default();
        scan_bounded(&mut sf, s, CONTEXT_BYTES, 0, SYSTEM_WEIGHT);
        // A nudge at most: a long system prompt repeats its theme; the request decides.
        for i in 0..9 {
            f.kw[i] += sf.kw[i].min(SYSTEM_MAX_EVIDENCE);
        }
    }
    finish(&f)
}

/// Scores a single prompt (a one-turn conversation).
pub fn score_text(text: &str) -> RuleScore {
    score(&ClassifyInput::from_prompt(text))
}

fn scan_bounded(f: &mut Features, text: &str, head: usize, tail: usize, weight: f32) {
    if text.len() <= head + tail {
        f.scan(text, weight);
        return;
    }
    let mut h = head;
    while !text.is_char_boundary(h) {
        h -= 1;
    }
    f.scan(&text[..h], weight);
    if tail > 0 {
        let mut t = text.len() - tail;
        while !text.is_char_boundary(t) {
            t += 1;
        }
        f.scan(&text[t..], weight);
    }
}

fn finish(f: &Features) -> RuleScore {
    let scores = f.logits();
    let mut best = 0;
    for i in 1..8 {
        if scores[i] > scores[best] {
            best = i;
        }
    }
    let max = scores[best];
    let z: f32 = scores.iter().map(|s| (s - max).exp()).sum();
    let confidence = if z.is_finite() && z > 0.0 {
        1.0 / z
    } else {
        0.0
    };
    let category = Category::ALL[best];
    RuleScore {
        category,
        tier: f.tier(category),
        confidence,
        scores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::input::Turn;

    fn cat(text: &str) -> Category {
        score_text(text).category
    }

    #[test]
    fn obvious_prompts_land_in_their_category() {
        assert_eq!(cat("hello there, how are you?"), Category::SimpleChat);
        assert_eq!(cat("tell me a joke"), Category::SimpleChat);
        assert_eq!(cat("set a timer for 20 minutes"), Category::Agentic);
        assert_eq!(
            cat("Write a python function to reverse a linked list."),
            Category::Coding
        );
        assert_eq!(
            cat("fix this:\n```rust\nfn main() { let x = vec![1]; x.push(2); }\n```"),
            Category::Coding
        );
        assert_eq!(
            cat("Carl buys ten packs of cookies. Each pack has 6 cookies and costs $0.10. How much does he pay in total?"),
            Category::Reasoning
        );
        assert_eq!(
            cat("Prove that the square root of 2 is irrational."),
            Category::Reasoning
        );
        assert_eq!(
            cat("Write a short poem about autumn leaves."),
            Category::Creative
        );
        assert_eq!(
            cat("Extract the named entities from the following text and output them as JSON:\nAlice met Bob in Paris."),
            Category::Data
        );
        assert_eq!(
            cat("Which of the following is a mammal?\nA. shark\nB. whale\nC. trout\nD. squid"),
            Category::General
        );
    }

    #[test]
    fn multilingual_cues() {
        assert_eq!(cat("Escribe un poema sobre el mar"), Category::Creative);
        assert_eq!(
            cat("Schreibe eine Funktion in Python, die eine Liste sortiert"),
            Category::Coding
        );
        assert_eq!(cat("请写一个故事，关于一只小猫"), Category::Creative);
        assert_eq!(
            cat("用Python写一个函数计算斐波那契数列的代码"),
            Category::Coding
        );
        assert_eq!(
            cat("Докажите, что сумма углов треугольника равна 180 градусам"),
            Category::Reasoning
        );
    }

    #[test]
    fn tiers_follow_difficulty() {
        assert_eq!(score_text("hi").tier, 1);
        let hard = "Design a distributed, scalable architecture for a rate limiter; analyze the \
                    tradeoffs and prove its correctness step by step with a rigorous argument. "
            .repeat(3);
        assert!(score_text(&hard).tier >= 3, "{:?}", score_text(&hard));
        for t in 1..=4 {
            let _ = t;
        }
    }

    #[test]
    fn long_system_prompt_does_not_drown_the_question() {
        let system =
            "You are a world-class python programmer. Write code, functions, scripts. ".repeat(100);
        let input = ClassifyInput {
            system: vec![&system],
            turns: vec![Turn {
                role: Role::User,
                text: "Write a short poem about the sea.",
            }],
            has_tools: false,
            has_audio: false,
        };
        assert_eq!(score(&input).category, Category::Creative);
    }

    #[test]
    fn confidence_and_tier_are_in_range_for_odd_inputs() {
        let big = "a".repeat(1 << 20);
        let garbage: String = (0u32..5000)
            .filter_map(|i| char::from_u32((i * 7919) % 0x11000))
            .collect();
        let words = "longword".repeat(50);
        for text in [
            "",
            " ",
            "\n\n\n",
            "?????",
            "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
            big.as_str(),
            garbage.as_str(),
            words.as_str(),
            "你",
            "ﾟ",
        ] {
            let r = score_text(text);
            assert!((1..=4).contains(&r.tier));
            assert!(r.confidence >= 0.0 && r.confidence <= 1.0, "{text:?}");
            assert_ne!(r.category, Category::Transcription);
        }
    }

    #[test]
    fn history_counts_but_less_than_latest_turn() {
        let input = ClassifyInput {
            system: vec![],
            turns: vec![
                Turn {
                    role: Role::User,
                    text: "Write a python function that parses JSON",
                },
                Turn {
                    role: Role::Assistant,
                    text: "def parse(s): ...",
                },
                Turn {
                    role: Role::User,
                    text: "now make it handle errors and add a unit test for the function",
                },
            ],
            has_tools: false,
            has_audio: false,
        };
        assert_eq!(score(&input).category, Category::Coding);
    }
}
