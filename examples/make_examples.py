"""Generate the deterministic example inputs for sift under ``examples/``.

Writes six JSON Lines files (UTF-8, one JSON object per line, each with a string ``id``):

* ``moderation.jsonl`` -- 300 synthetic comment-stream texts for the ``moderate`` task
  (benign chatter and reviews, spam, mild insults, mild non-specific threats, support-seeking
  messages, hateful-sounding generalisations about fictional groups and teams, misinformation
  and innuendo), with some very short, some long, a few non-English, emoji and URL texts.
* ``sentiment.jsonl`` -- 200 clearly positive or clearly negative reviews and tweets (``classify``).
* ``zero_shot.jsonl`` -- 60 texts with candidate topic labels (``zero_shot``).
* ``nli.jsonl`` -- 60 premise/hypothesis pairs: entailed, neutral and contradicting (``nli``).
* ``rerank.jsonl`` -- 40 queries with 4 to 10 documents each, one or two relevant (``rerank``).
* ``bad_input.jsonl`` -- 20 hand-written lines for ``classify`` mixing valid items with every kind of bad input.

Everything is synthetic and built from hand-written phrase banks combined by templates with a
fixed seed, so running this script twice produces byte-identical files. No ground-truth labels are
written: the item schemas are strict and reject unknown fields.

Usage: ``python3 examples/make_examples.py [OUTPUT_DIR]`` (default: the directory of this script).
Standard library only.
"""

import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

SEED = 20240611

Maker = Callable[[random.Random], str]

# Fictional user handles; used as harassment/threat targets so no real person is named.
HANDLES = [
    "user4821",
    "gamer_kid99",
    "SunnyDays_22",
    "bluebird_77",
    "night_owl_13",
    "quietreader",
    "TacoTuesday88",
    "mossy_stone",
]


def cap(text: str) -> str:
    """Upper-case the first character only."""
    return text[:1].upper() + text[1:]


def word_count(text: str) -> int:
    """Whitespace-separated word count."""
    return len(text.split())


def ramble(rng: random.Random, sentences: Sequence[str]) -> str:
    """Join a themed run of sentences into one 100-250 word text, sometimes dropping a middle sentence or two."""
    middle = list(range(1, len(sentences) - 1))
    drop = set(rng.sample(middle, rng.randint(0, 2)))
    text = " ".join(s for i, s in enumerate(sentences) if i not in drop)
    if word_count(text) < 100:
        text = " ".join(sentences)
    n = word_count(text)
    if not 100 <= n <= 250:
        raise ValueError(f"ramble has {n} words, expected 100-250: {text[:60]!r}")
    return text


def collect(rng: random.Random, fixed: Sequence[str], makers: Sequence[Maker], count: int, seen: set[str]) -> list[str]:
    """Take the hand-written ``fixed`` texts, then fill up to ``count`` with template output, skipping repeats."""
    out: list[str] = []
    for text in fixed:
        if text in seen:
            raise ValueError(f"duplicate fixed text: {text!r}")
        seen.add(text)
        out.append(text)
    if len(out) > count:
        raise ValueError(f"{len(out)} fixed texts but only {count} wanted")
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 100_000:
            raise RuntimeError("templates cannot produce enough distinct texts")
        text = rng.choice(makers)(rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


# ---------------------------------------------------------------------------------------------
# moderation.jsonl: phrase banks
# ---------------------------------------------------------------------------------------------

BENIGN_FIXED = [
    "lol",
    "First!",
    "Nice 👍",
    "thanks so much",
    "agreed",
    "Happy Friday everyone!",
    "Does this come in a larger size?",
    "Congrats on the new job!! 🎉🎉",
    "Just finished the book, that ending 😭",
    "Anyone else watching the meteor shower tonight? 🌠",
    "Super article, merci pour le partage !",
    "Quelqu'un sait à quelle heure ouvre la boutique demain ?",
    "¡Me encanta este lugar! La comida es deliciosa y el servicio excelente.",
    "¿Alguien sabe si este modelo funciona con Mac?",
    "Tolles Video, danke! Ich habe viel gelernt.",
    "Das Produkt ist nach zwei Wochen kaputt gegangen. Sehr enttäuscht.",
    "Here's the recipe I mentioned: https://recipes.example.com/lemon-drizzle-cake 🍋",
    "The full schedule for the community cleanup is at https://parks.example.org/cleanup, see you Saturday!",
    "I wrote up my notes from the workshop here if anyone wants them: https://blog.example.net/workshop-notes",
]

BENIGN_RAMBLES = [
    [
        "Okay so this is going to be a long one, sorry in advance.",
        (
            "Last spring a few of us on our street decided to turn the empty lot behind the laundromat into a community"
            " garden."
        ),
        "None of us really knew what we were doing at first.",
        (
            "We borrowed tools from whoever had them and spent three weekends just pulling weeds and hauling out old"
            " bricks."
        ),
        "My neighbor brought her grandkids, who mostly dug holes and found worms, which honestly counted as help.",
        "By June we had tomatoes, beans, zucchini and way too much mint.",
        "Someone set up a little table where people could leave extra vegetables for anyone who wanted them.",
        "I met more of my neighbors in those few months than in the five years I've lived here.",
        "We had a potluck at the end of the summer and somebody made the best zucchini bread I've ever tasted.",
        (
            "Anyway, we're planning next year's beds now and could use advice on keeping the mint from taking over"
            " everything."
        ),
        "If anyone has tips, I'm all ears.",
        "Thanks for reading this far!",
    ],
    [
        "Long post, but I just need to share how this week went.",
        "We finally moved into the new apartment on Saturday after two months of packing.",
        "The elevator was out of service, of course, so everything went up four flights of stairs.",
        "My brother showed up with pizza and a dolly, which made him the hero of the day.",
        "We found a box labeled 'misc kitchen' that turned out to contain exactly one spatula and a tennis ball.",
        (
            "The cat spent the first night hiding in the bathtub and the second night claiming the best spot on the new"
            " couch."
        ),
        "The light in the living room is so much better than at our old place.",
        "I've already put plants on every windowsill.",
        "There's a little bakery on the corner that opens at six, which is dangerous information for me.",
        "We still haven't found the box with the bedsheets, so we've been sleeping under beach towels.",
        "Still, it already feels like home.",
        "If anyone has tips for unpacking without losing your mind, please share.",
    ],
    [
        "I don't usually write reviews, but this espresso machine deserves one.",
        "I went back and forth for weeks comparing models and reading forums.",
        "In the end I picked this one because it had a proper steam wand and a small footprint.",
        "Setup took maybe fifteen minutes, including rinsing everything and running water through it twice.",
        "The first few shots were sour, which turned out to be my grind, not the machine.",
        "Once I adjusted that, the shots came out rich and balanced with a nice layer of crema.",
        "The steam wand takes some practice, but after a week I was pouring wobbly little hearts.",
        "It heats up in about a minute, which matters a lot on busy mornings.",
        "Cleaning is simple as long as you wipe the wand right after use.",
        "It's a bit loud, and the drip tray fills up faster than I'd like.",
        "Those are small complaints for what it delivers.",
        "I've probably saved the cost of it already by skipping the café.",
        "Four and a half stars from me.",
    ],
    [
        "Buckle up, because I have a lot to say about this so-called waterproof hiking jacket.",
        (
            "I bought it specifically for a three-day trip in the hills because the description promised it would keep"
            " me dry in heavy rain."
        ),
        "The first afternoon it drizzled lightly and within twenty minutes my shoulders were soaked.",
        (
            "I thought maybe I had not closed the zipper flap properly, so I checked everything and tried again the"
            " next day."
        ),
        "Same result, except this time the water also got into the pockets and ruined a paper map.",
        "The hood is cut so strangely that it either covers your eyes or blows straight off.",
        "One of the cuff fasteners came off on day two.",
        "When I got home I contacted the seller with photos and a detailed description.",
        (
            "They replied a week later with a copy-pasted message telling me to wash it with a special product they"
            " also sell."
        ),
        "I am not paying extra to make a jacket do what it was advertised to do in the first place.",
        "The color is nice and it packs down small, so that's the two stars.",
        "Save your money and buy something from a brand that actually tests its gear.",
    ],
    [
        "Hi everyone, I have kind of a long question so bear with me.",
        (
            "I'm forty-two and I finally started learning guitar a couple of months ago, something I've wanted to do"
            " since I was a teenager."
        ),
        "I've been using free videos online and practicing about twenty minutes most evenings.",
        "I can play a handful of open chords now, but switching between them is still slow and clunky.",
        "My fingertips hurt less than they did at the start, which I'm told is a good sign.",
        "The problem is that I'm not sure whether I should keep going on my own or pay for lessons.",
        "Lessons near me are not cheap, and my schedule is pretty unpredictable because of work.",
        "On the other hand, I worry I'm building bad habits that will be hard to fix later.",
        "Did anyone here start as an adult, and what worked for you?",
        "Also, is it normal that the G chord feels impossible?",
        "Any advice is appreciated, and thanks for being such a friendly community.",
    ],
]

FRIENDLY_OPENERS = [
    "Great post!",
    "Love this.",
    "Thanks for sharing!",
    "This made my day.",
    "Honestly, well said.",
    "What a lovely idea.",
    "So glad I found this thread.",
    "Wow.",
]
FRIENDLY_BODIES = [
    "Your photos of the coastline are stunning.",
    "I tried your tip about watering in the morning and my tomatoes look so much better.",
    "The step-by-step explanation finally made recursion click for me.",
    "My kids loved the craft idea, we did it all afternoon.",
    "It's nice to see a friendly corner of the internet.",
    "Can't wait for the next episode.",
    "Your dog looks like he's having the best day ever.",
    "The colors in that painting are gorgeous.",
    "This is exactly the kind of content I come here for.",
    "I shared this with my book club and they loved it.",
]
FRIENDLY_EMOJI = ["", "", "", " 😊", " ❤️", " 🙌", " 👏"]

PRODUCTS = [
    "blender",
    "rain jacket",
    "desk lamp",
    "wireless speaker",
    "backpack",
    "coffee grinder",
    "phone case",
    "air fryer",
    "yoga mat",
    "electric kettle",
]
PRODUCT_INTROS = [
    "Bought the {p} last month.",
    "Been using this {p} for a few weeks now.",
    "Got the {p} as a gift.",
    "Ordered the {p} on a whim.",
    "Update on the {p} I mentioned:",
]
REVIEW_POS_DETAILS = [
    "It works exactly as described.",
    "Build quality is excellent for the price.",
    "Shipping was fast and the packaging was great.",
    "It feels a lot more solid than I expected.",
    "Super easy to set up.",
    "It still looks brand new after daily use.",
]
REVIEW_POS_CLOSES = ["Five stars.", "Would buy again.", "Highly recommend!", "Very happy with it.", "No complaints."]
REVIEW_NEG_DETAILS = [
    "It stopped working after two weeks.",
    "The stitching came apart almost immediately.",
    "It's much smaller than the photos suggest.",
    "Customer service never answered my emails.",
    "It arrived scratched and missing a part.",
    "It smells like burnt plastic every time I use it.",
]
REVIEW_NEG_CLOSES = [
    "Two stars.",
    "Returning it.",
    "Not worth the money.",
    "Pretty disappointed.",
    "Would not recommend.",
]

QUESTION_OPENERS = [
    "Does anyone know",
    "Can anyone tell me",
    "I was wondering",
    "Hi all, does anybody know",
    "Sorry if this is a repeat, but does anyone know",
]
QUESTIONS = [
    "what time the farmers market opens on Sundays?",
    "if this recipe works with gluten-free flour?",
    "how long the battery lasts on a full charge?",
    "where I can find the patch notes for the latest update?",
    "whether the museum is free on the first Sunday of the month?",
    "how to get sticker residue off a laptop?",
    "if the lake trail is still muddy after the rain?",
    "which charger is compatible with this model?",
]

WEATHER_LINES = [
    "Finally some sunshine today.",
    "It's been raining all week here.",
    "First snow of the year this morning!",
    "So windy outside today.",
    "Such a foggy morning.",
    "Hottest day of the summer so far.",
]
PLAN_LINES = [
    "Going to take the dog for a long walk.",
    "Perfect excuse to stay in and bake bread.",
    "Anyone have good podcast recommendations?",
    "Think I'll finally clean out the garage.",
    "Time for a big pot of soup.",
    "Might go see a movie later.",
]

SPAM_FIXED = [
    "FREE iPhone!!!",
    "Click here to win!!",
    "DM me 💰💰",
    "Gana dinero desde casa sin experiencia. Haz clic aquí: http://dinero-facil.example/registro",
    "Gagnez un iPhone gratuit ! Cliquez ici : http://cadeau-gratuit.example/gagner",
    "Jetzt klicken und 500 € Gutschein sichern!!! http://gutschein-sofort.example",
    "Make $300 a day working from home! No experience needed. Click here: http://easy-cash-jobs.example",
    "Lose 20 pounds in 10 days with this one weird trick 👉 http://slim-secret.example",
]
SPAM_RAMBLE = [
    "ATTENTION EVERYONE!!! I used to work sixty hours a week and still could not pay my bills.",
    "Then a friend showed me a simple online system that changed everything.",
    "Now I make over $2,000 a day from my phone, and I only work an hour in the morning.",
    "No experience needed, no boss, no stress.",
    "Banks hate this because it means people like us finally get our freedom.",
    "I quit my job last month and bought my mom a new car with cash.",
    "You can do the same starting today, but spots are very limited.",
    "Only the first 20 people who sign up get access to the private coaching group.",
    "All you have to do is pay a small one-time activation fee and follow the steps.",
    "Click here now before the offer disappears: http://fast-freedom-income.example/join",
    "Don't let fear keep you poor, this is your sign!!!",
    "Message me if you have questions, I reply to everyone 💸💸💸",
]
PRIZE_HOOKS = ["CONGRATULATIONS!!!", "🎉 You have been selected!", "URGENT:", "Limited time only!", "Winner alert 🚨"]
PRIZE_OFFERS = [
    "You've won a $1,000 gift card.",
    "You are our lucky visitor today and qualify for a free tablet.",
    "Claim your free cruise for two before midnight.",
    "Your account has been chosen for a $500 cash reward.",
]
PRIZE_CTAS = ["Click here to win:", "Claim now at", "Tap the link to collect:", "Verify your details here:"]
SPAM_URLS = [
    "http://win-big-prizes.example/claim",
    "https://free-gift-center.example/now",
    "http://lucky-visitor.example/?id=88231",
    "https://claim-reward.example.net/verify",
]
CRYPTO_HOOKS = ["🚀🚀🚀", "Stop working 9-5!", "I was broke last year.", "Guaranteed returns!", "Don't miss this one."]
CRYPTO_PROMISES = [
    "Turn $100 into $10,000 in one week with MoonVaultCoin.",
    "My crypto signal group made 400% profit this month.",
    "Invest in ZentaToken now before it goes 1000x.",
    "Our trading bot doubles your Bitcoin every 48 hours, zero risk.",
]
CRYPTO_CTAS = [
    "DM me for the secret link.",
    "Join our Telegram before spots run out.",
    "Send 0.01 BTC to activate your account.",
    "Message me 'INFO' to get started.",
]
GIVEAWAYS = [
    "Giving away 50 gaming consoles to my followers!",
    "Huge giveaway: free designer sneakers for the first 100 people!",
    "We're giving away $5,000 to celebrate 1M followers!",
    "Free concert tickets giveaway 🎟️!",
]
GIVEAWAY_CONDITIONS = [
    "Just like, share and send your card number to cover shipping.",
    "Comment 'ME' and follow the link in my bio.",
    "Enter your login details at http://giveaway-official.example to qualify.",
    "Pay a small $9.99 processing fee and it's yours.",
]

INSULT_FIXED = [
    "idiot",
    "you're pathetic",
    "Log off, loser.",
    "Imagine being this wrong 🤡",
    "T'es vraiment nul, arrête de poster.",
    "Eres un payaso, nadie te toma en serio.",
    "Du hast echt keine Ahnung, wovon du redest.",
]
INSULT_RAMBLE = [
    "Honestly @pixel_painter, I've been reading your posts for months and I can't stay quiet anymore.",
    "Every single thing you share is lazy, derivative and boring.",
    "You call yourself an artist, but a toddler with crayons would do a better job.",
    "You keep begging for feedback and then sulking when people actually give it.",
    "Nobody here actually likes you, they're just too polite to say it.",
    "Your tutorials are wrong, your opinions are worthless and your jokes are painfully unfunny.",
    "I've seen you try to start drama in three different groups now.",
    "Maybe take the hint and find a new hobby, because this one clearly isn't working out.",
    "And don't bother blocking me, I'll just make another account and keep showing up in your comments.",
    "Someone has to tell you the truth, and it might as well be me.",
]
INSULT_TARGETS = ["@{h} ", "Hey OP, ", "", "To the person who posted this: ", "Wow @{h}, "]
INSULTS = [
    "you're the most clueless person in this entire thread.",
    "nobody asked for your opinion.",
    "your takes are as bad as your spelling.",
    "you clearly have no idea what you're talking about.",
    "do everyone a favor and stop posting.",
    "you're a joke and everyone here knows it.",
    "you must be really dense to believe that.",
    "go back to lurking, you add nothing.",
]
INSULT_TAILS = ["", " Pathetic.", " 🙄", " Seriously.", " Clown."]
HARASSMENT = [
    "I'm going to reply to every single one of your posts until you quit, @{h}.",
    "Everyone go flood @{h}'s comments and let them know how terrible their art is.",
    "@{h} I made a new account since you blocked my old one. You can't get rid of me.",
    "Hey @{h}, I screenshotted all your old posts and I'm sending them to everyone you know.",
    "Reminder that @{h} is the most annoying person on this site. Unfollow them, everyone.",
]

THREAT_FIXED = [
    "You'll regret this.",
    "Watch your back.",
    "This isn't over.",
    "Das wirst du noch bereuen.",
    "Te vas a arrepentir de esto.",
    "Tu vas le regretter, crois-moi.",
    "Next raid I'm hunting your character down and taking all your loot 😤",
    "My dragon will burn your castle to the ground next season, just wait.",
    "In the next match I'm going to absolutely destroy your team. No mercy.",
]
THREAT_PREFIXES = ["", "@{h} ", "Mark my words: ", "Last warning. ", "Fine. "]
THREAT_BODIES = [
    "you'll regret crossing me.",
    "keep talking and see what happens.",
    "one more comment like that and you'll be sorry.",
    "people like you always get what's coming to them.",
    "you won't be laughing for long.",
    "I'd think twice before posting that again if I were you.",
    "this is going to come back to bite you.",
]

SELF_HARM_SUPPORT = [
    "I've been feeling really low lately and don't know who to talk to.",
    "Does anyone else ever feel like they're just going through the motions? I could use someone to talk to.",
    "Some days I feel like a burden to everyone around me. Is there somewhere I can talk to someone about this?",
    "I haven't been sleeping and everything feels heavy. How did you find a therapist you trust?",
    "Honestly not doing great today. Could really use a kind word.",
    "Feeling hopeless lately. Are there any support lines that are free and anonymous?",
    "I've been struggling a lot since my breakup and I don't want to worry my friends. Where can I get support?",
    "Me siento muy solo últimamente y no sé con quién hablar.",
    "Is it normal to feel empty all the time? I think I need help but I'm scared to ask.",
    "My anxiety has been so bad I can barely leave the house. Any advice on taking the first step toward help?",
    "I lost my job last month and I've been in a really dark place. How do people get through this?",
    "not ok today 😞",
    "Ça ne va pas fort en ce moment, j'aurais besoin de parler à quelqu'un.",
    "Lately I've had thoughts that scare me. I want to talk to a professional, how do I start?",
]
SELF_HARM_RAMBLE = [
    "I'm not really sure where else to post this, so I'm trying here.",
    "For the last few months I've been feeling really low and tired all the time.",
    "I moved to a new city for work and I don't really know anyone yet.",
    "Most evenings I just sit at home and feel like I'm disappearing.",
    "I keep telling my family I'm fine on the phone because I don't want them to worry.",
    "Some nights my thoughts get pretty dark and that scares me.",
    "I know I should probably talk to someone, but I don't know how to start that conversation.",
    "Has anyone been in a similar place and found something that helped?",
    "How do you go about finding a counselor or a support line when you're new somewhere?",
    "Even just hearing that it gets better would mean a lot right now.",
    "Thanks for reading.",
]

# Fictional groups and teams only.
HATE_GROUPS = [
    "Glorbians",
    "people from the planet Quorr",
    "Marsh Hollow Mudcats fans",
    "Riverton Rovers supporters",
    "Zentari",
    "Blue Valley Badgers fans",
    "Fenwick Islanders",
]
HATE_TRAITS = [
    "lazy and dishonest",
    "brainless thugs",
    "born liars",
    "dirty cheaters",
    "too dumb to hold a conversation",
]
HATE_TEMPLATES = [
    "All {g} are {t}.",
    "Never trust {g}, they're all {t}.",
    "I've never met {g} who weren't {t}.",
    "Face it, {g} are {t}. Every single one of them.",
    "{G} ruin every place they show up.",
    "This forum would be a lot better without {g} in it.",
    "Typical {g}. Always whining, never contributing anything.",
]
HATE_FIXED = [
    "Mudcats fans = trash 🗑️",
    "Les supporters des Rovers sont tous des abrutis.",
]

INNUENDO = [
    "Is that a banana in your pocket or are you just happy to see me? 😏",
    "Wanna come over and 'watch a movie' tonight? 😉",
    "Those are some nice melons you've got there... at the farmers market stand, I mean 🍈",
    "I'd let you butter my croissant any day 😘",
    "Nice profile pic. Your DMs open? 😏",
    "That's what she said.",
    "Netflix and chill later? 👀",
    "You can park your bike in my garage anytime, if you know what I mean.",
    "Tu es très charmant... on se voit ce soir ? 😉",
    "Hey gorgeous, that outfit is doing things to me 🔥",
]
MISINFO_RAMBLE = [
    "I've done a LOT of research on this and people need to hear it.",
    "The new smart electricity meters they installed on every house last year are not just measuring power.",
    "My neighbor's brother-in-law is an electrician and he says they have tiny cameras inside.",
    "Ever since ours was installed, my houseplants have been wilting and my dog barks at the wall at night.",
    "That's not a coincidence.",
    "The power company says they're only for billing, but of course they would say that.",
    (
        "If you unplug your router every night the meter can't send anything and your bill goes down by half, I've"
        " tested it myself."
    ),
    "The mainstream news won't touch this story because the companies pay for their ads.",
    "Do your own research and don't just trust the so-called experts.",
    "Share this with everyone you know before it gets taken down!",
]
MISINFO_OPENERS = [
    "Wake up people!",
    "My cousin who works in a lab told me this:",
    "They don't want you to know this:",
    "FACT:",
    "Share before it gets deleted:",
]
MISINFO_CLAIMS = [
    "drinking a glass of hot salt water every hour cures the flu.",
    "the new streetlights are secretly recording everyone's conversations.",
    "eating raw garlic before bed makes you immune to every virus.",
    "the moon is actually a hologram projected by satellites.",
    "supermarket bananas are injected with dye so they glow in the dark.",
    "tap water in our city has been mixed with a chemical that makes people forgetful.",
    "cows can predict earthquakes three weeks in advance and the government hides it.",
]
MISINFO_CLOSES = ["Do your own research.", "The media will never report this.", "", "Spread the word!"]


def _friendly(rng: random.Random) -> str:
    return f"{rng.choice(FRIENDLY_OPENERS)} {rng.choice(FRIENDLY_BODIES)}{rng.choice(FRIENDLY_EMOJI)}"


def _review_pos(rng: random.Random) -> str:
    intro = rng.choice(PRODUCT_INTROS).format(p=rng.choice(PRODUCTS))
    return f"{intro} {rng.choice(REVIEW_POS_DETAILS)} {rng.choice(REVIEW_POS_CLOSES)}"


def _review_neg(rng: random.Random) -> str:
    intro = rng.choice(PRODUCT_INTROS).format(p=rng.choice(PRODUCTS))
    return f"{intro} {rng.choice(REVIEW_NEG_DETAILS)} {rng.choice(REVIEW_NEG_CLOSES)}"


def _question(rng: random.Random) -> str:
    return f"{rng.choice(QUESTION_OPENERS)} {rng.choice(QUESTIONS)}"


def _chitchat(rng: random.Random) -> str:
    return f"{rng.choice(WEATHER_LINES)} {rng.choice(PLAN_LINES)}"


def _spam_prize(rng: random.Random) -> str:
    parts = [rng.choice(PRIZE_HOOKS), rng.choice(PRIZE_OFFERS), rng.choice(PRIZE_CTAS), rng.choice(SPAM_URLS)]
    return " ".join(parts)


def _spam_crypto(rng: random.Random) -> str:
    return f"{rng.choice(CRYPTO_HOOKS)} {rng.choice(CRYPTO_PROMISES)} {rng.choice(CRYPTO_CTAS)}"


def _spam_giveaway(rng: random.Random) -> str:
    return f"{rng.choice(GIVEAWAYS)} {rng.choice(GIVEAWAY_CONDITIONS)}"


def _insult(rng: random.Random) -> str:
    target = rng.choice(INSULT_TARGETS).format(h=rng.choice(HANDLES))
    body = rng.choice(INSULTS)
    text = f"{target}{body}{rng.choice(INSULT_TAILS)}"
    return cap(text) if not target else text


def _harassment(rng: random.Random) -> str:
    return rng.choice(HARASSMENT).format(h=rng.choice(HANDLES))


def _threat(rng: random.Random) -> str:
    prefix = rng.choice(THREAT_PREFIXES).format(h=rng.choice(HANDLES))
    body = rng.choice(THREAT_BODIES)
    if prefix == "" or prefix.endswith(". "):
        body = cap(body)
    return f"{prefix}{body}"


def _hate(rng: random.Random) -> str:
    group = rng.choice(HATE_GROUPS)
    text = rng.choice(HATE_TEMPLATES).format(g=group, G=cap(group), t=rng.choice(HATE_TRAITS))
    return cap(text)


def _misinfo(rng: random.Random) -> str:
    parts = [rng.choice(MISINFO_OPENERS), cap(rng.choice(MISINFO_CLAIMS)), rng.choice(MISINFO_CLOSES)]
    return " ".join(p for p in parts if p)


# Category name and number of texts: 135+45+36+24+15+24+21 = 300 (45%, 15%, 12%, 8%, 5%, 8%, 7%).
MODERATION_PLAN: list[tuple[str, int]] = [
    ("benign", 135),
    ("spam", 45),
    ("insult_harassment", 36),
    ("threat_like", 24),
    ("self_harm_support", 15),
    ("hateful_generalization", 24),
    ("other", 21),
]


def moderation_items(rng: random.Random) -> list[dict[str, object]]:
    """300 distinct comment-stream texts in the planned category mix, shuffled, with ids m-0001..m-0300."""
    fixed: dict[str, list[str]] = {
        "benign": [*BENIGN_FIXED, *(ramble(rng, r) for r in BENIGN_RAMBLES)],
        "spam": [*SPAM_FIXED, ramble(rng, SPAM_RAMBLE)],
        "insult_harassment": [*INSULT_FIXED, ramble(rng, INSULT_RAMBLE)],
        "threat_like": THREAT_FIXED,
        "self_harm_support": [*SELF_HARM_SUPPORT, ramble(rng, SELF_HARM_RAMBLE)],
        "hateful_generalization": HATE_FIXED,
        "other": [*INNUENDO, ramble(rng, MISINFO_RAMBLE)],
    }
    makers: dict[str, list[Maker]] = {
        "benign": [_friendly, _friendly, _review_pos, _review_pos, _review_neg, _question, _chitchat],
        "spam": [_spam_prize, _spam_crypto, _spam_giveaway],
        "insult_harassment": [_insult, _insult, _harassment],
        "threat_like": [_threat],
        "self_harm_support": [],
        "hateful_generalization": [_hate],
        "other": [_misinfo],
    }
    seen: set[str] = set()
    texts: list[str] = []
    for category, count in MODERATION_PLAN:
        texts.extend(collect(rng, fixed[category], makers[category], count, seen))
    rng.shuffle(texts)
    return [{"id": f"m-{i:04d}", "text": text} for i, text in enumerate(texts, start=1)]


# ---------------------------------------------------------------------------------------------
# sentiment.jsonl
# ---------------------------------------------------------------------------------------------

SENTIMENT_BANK: dict[tuple[str, str], list[str]] = {
    ("product", "pos"): [
        "This vacuum picks up everything, even pet hair, on the first pass.",
        "Best headphones I have ever owned, the sound is crisp and rich.",
        "The blender crushes ice in seconds and is easy to clean.",
        "Arrived a day early and works perfectly.",
        "Sturdy, well made, and worth every penny.",
        "My new laptop boots in seconds and the screen is gorgeous.",
        "The battery easily lasts two full days.",
        "Setup took five minutes and the instructions were crystal clear.",
    ],
    ("product", "neg"): [
        "The charger stopped working after three days.",
        "Cheap plastic that cracked the first time I used it.",
        "The zipper broke within a week, a total waste of money.",
        "It arrived damaged and support ignored my emails.",
        "The battery barely lasts an hour.",
        "The instructions were useless and half the screws were missing.",
        "The sound is tinny and it randomly disconnects.",
        "Overpriced junk, I returned it immediately.",
    ],
    ("movie", "pos"): [
        "An absolute masterpiece with stunning visuals and a moving score.",
        "The lead actress gives the performance of her career.",
        "I laughed from start to finish, easily the funniest film this year.",
        "The plot twist at the end left the whole theater cheering.",
        "Beautifully shot, brilliantly acted, and genuinely touching.",
        "I already want to watch it again.",
        "The dialogue is sharp and the pacing never drags.",
        "A heartwarming story the whole family will love.",
    ],
    ("movie", "neg"): [
        "Two hours of my life I will never get back.",
        "The plot made no sense and the acting was wooden.",
        "I fell asleep halfway through, it was that boring.",
        "The dialogue was cringeworthy and the ending was lazy.",
        "A bloated, noisy mess with no heart at all.",
        "Even the special effects looked cheap.",
        "The jokes fell flat and nobody in the theater laughed.",
        "Easily the worst sequel I have ever seen.",
    ],
    ("restaurant", "pos"): [
        "The pasta was perfectly cooked and the sauce was incredible.",
        "Our server was friendly, attentive, and made great recommendations.",
        "Best tacos in town, hands down.",
        "Cozy atmosphere, generous portions, and fair prices.",
        "The chocolate dessert alone is worth the trip.",
        "Everything tasted fresh and came out quickly.",
        "We will definitely be coming back next weekend.",
        "The staff went out of their way to make my birthday special.",
    ],
    ("restaurant", "neg"): [
        "We waited an hour for cold, bland food.",
        "The waiter was rude and got our order wrong twice.",
        "The fish tasted off and the fries were soggy.",
        "Overpriced, tiny portions, and a sticky table.",
        "The bathroom was filthy and the music was deafening.",
        "My steak came out raw in the middle after a forty minute wait.",
        "The worst dinner we have had in years.",
        "They charged us for drinks we never ordered.",
    ],
    ("tweet", "pos"): [
        "Best day ever, just got my dream job!",
        "Sunshine, coffee, and a good book, life is good.",
        "So proud of my little brother for graduating today!",
        "This new album has been on repeat all week, absolutely love it.",
        "Finally finished my first marathon and I feel amazing!",
        "Shoutout to the stranger who paid for my coffee this morning, you made my day.",
        "Our team won the championship, what a game!",
        "Just adopted the sweetest puppy and I'm so happy.",
    ],
    ("tweet", "neg"): [
        "Worst Monday ever, missed my train and spilled coffee on my shirt.",
        "My flight got cancelled again, I am so done with this airline.",
        "Internet has been down all day, absolutely furious.",
        "Can't believe they cancelled my favorite show, so disappointed.",
        "Stuck in traffic for two hours, this city is a nightmare.",
        "My phone screen cracked the day after the warranty expired, just great.",
        "Third time this week the delivery never showed up, terrible service.",
        "Feeling miserable, this cold will not go away.",
    ],
}
SENTIMENT_CLOSERS = {
    "pos": ["Highly recommended!", "Five stars.", "Loved it.", "10/10.", "Can't recommend it enough."],
    "neg": ["Avoid.", "One star.", "Not recommended.", "Never again.", "Save your money."],
}
TWEET_SUFFIXES = {
    "pos": ["", " 😊", " #blessed", " 🎉", " #happy"],
    "neg": ["", " 😡", " #fail", " 😤", " #worstdayever"],
}


def sentiment_items(rng: random.Random) -> list[dict[str, object]]:
    """200 distinct clearly-polarised texts (100 positive, 100 negative), 5-60 words, ids s-0001..s-0200."""
    domains = ["product", "movie", "restaurant", "tweet"]
    plan = [(d, p) for d in domains for p in ("pos", "neg")]
    wanted = [plan[i % len(plan)] for i in range(200)]
    rng.shuffle(wanted)
    seen: set[str] = set()
    texts: list[str] = []
    for domain, polarity in wanted:
        for _ in range(10_000):
            k = rng.choice([1, 2] if domain == "tweet" else [1, 1, 2, 2, 3, 4])
            parts = rng.sample(SENTIMENT_BANK[(domain, polarity)], k)
            if domain == "tweet":
                text = " ".join(parts) + rng.choice(TWEET_SUFFIXES[polarity])
            else:
                if rng.random() < 0.5:
                    parts.append(rng.choice(SENTIMENT_CLOSERS[polarity]))
                text = " ".join(parts)
            if text not in seen and 5 <= word_count(text) <= 60:
                break
        else:
            raise RuntimeError(f"cannot make another distinct {domain}/{polarity} text")
        seen.add(text)
        texts.append(text)
    return [{"id": f"s-{i:04d}", "text": text} for i, text in enumerate(texts, start=1)]


# ---------------------------------------------------------------------------------------------
# zero_shot.jsonl
# ---------------------------------------------------------------------------------------------

TOPICS = [
    "sports",
    "politics",
    "technology",
    "cooking",
    "travel",
    "finance",
    "health",
    "music",
    "science",
    "education",
    "weather",
    "gaming",
    "art",
    "environment",
]

# (text, relevant topics, most relevant first)
ZERO_SHOT_TEXTS: list[tuple[str, list[str]]] = [
    ("The home team scored twice in the final minute to win the championship.", ["sports"]),
    ("She broke the national record in the 400 meters at Saturday's meet.", ["sports"]),
    ("The striker signed a three-year contract worth a record transfer fee.", ["sports", "finance"]),
    ("The coach blamed the loss on a crowded travel schedule and tired legs.", ["sports", "travel"]),
    ("Marathon runners were warned to stay hydrated as temperatures climbed.", ["sports", "weather", "health"]),
    ("The senate passed the budget bill after a marathon overnight session.", ["politics", "finance"]),
    ("Voters head to the polls on Tuesday to choose a new mayor.", ["politics"]),
    ("The two parties traded accusations during a heated televised debate.", ["politics"]),
    ("Lawmakers proposed new rules on how public schools are funded.", ["politics", "education"]),
    ("The minister resigned after weeks of pressure over the housing scandal.", ["politics"]),
    ("The new smartphone ships with a faster chip and a brighter display.", ["technology"]),
    ("Developers rushed to patch a security flaw in the popular web server.", ["technology"]),
    (
        "The startup's app uses machine learning to suggest recipes from what's in your fridge.",
        ["technology", "cooking"],
    ),
    ("Engineers unveiled a battery that charges an electric car in ten minutes.", ["technology", "science"]),
    ("The update finally adds an offline mode to the maps app.", ["technology", "travel"]),
    ("Brown the onions slowly before adding the garlic and tomatoes.", ["cooking"]),
    ("This sourdough needs a long overnight proof in the fridge.", ["cooking"]),
    ("A squeeze of lemon brightens almost any roasted vegetable.", ["cooking"]),
    ("Cutting back on sugar in your baking can still give you moist muffins.", ["cooking", "health"]),
    ("We learned to make fresh pasta during a cooking class in Bologna.", ["cooking", "travel"]),
    ("The cheapest time to fly to Lisbon is usually late January.", ["travel", "finance"]),
    ("Pack light layers, the mountain villages get cold at night.", ["travel", "weather"]),
    ("The night train from Vienna to Venice was the highlight of our trip.", ["travel"]),
    ("Check that your passport is valid for six months after your return date.", ["travel"]),
    ("The island's coral reefs draw snorkelers from around the world.", ["travel", "environment"]),
    ("The central bank kept interest rates unchanged for the third month in a row.", ["finance", "politics"]),
    ("Index funds offer low fees and broad diversification for long-term savers.", ["finance"]),
    ("Shares of the chipmaker jumped eight percent after strong earnings.", ["finance", "technology"]),
    ("Build an emergency fund before paying extra on your mortgage.", ["finance"]),
    ("Inflation eased slightly in March, according to new government figures.", ["finance", "politics"]),
    ("Getting seven to nine hours of sleep improves memory and mood.", ["health", "science"]),
    ("The clinic now offers free flu shots on weekday mornings.", ["health"]),
    ("A short walk after meals can help keep blood sugar steady.", ["health"]),
    ("Researchers found that regular stretching reduced back pain in office workers.", ["health", "science"]),
    ("Drink plenty of water during the heat wave and avoid the midday sun.", ["health", "weather"]),
    ("The band's new album mixes jazz horns with electronic beats.", ["music"]),
    ("Tickets for the summer festival sold out in under an hour.", ["music"]),
    ("She practiced the violin concerto for months before her conservatory audition.", ["music", "education"]),
    ("The orchestra will tour six cities across Asia this autumn.", ["music", "travel"]),
    ("The singer's acoustic set at the small club was unforgettable.", ["music"]),
    ("Astronomers detected water vapor in the atmosphere of a distant planet.", ["science"]),
    ("The experiment measured how quickly bacteria adapt to new antibiotics.", ["science", "health"]),
    ("A new fossil find suggests feathered dinosaurs were more widespread than thought.", ["science"]),
    ("Physicists cooled atoms to within a fraction of a degree of absolute zero.", ["science"]),
    ("Satellite data show the glacier has retreated two kilometers in a decade.", ["science", "environment"]),
    ("The district will hire fifty new teachers to shrink class sizes.", ["education", "politics"]),
    ("Students can now take the introductory coding course online for free.", ["education", "technology"]),
    ("Reading aloud to young children builds their vocabulary early.", ["education"]),
    ("The university raised tuition by four percent for next year.", ["education", "finance"]),
    ("Final exams start next week, and the library will stay open until midnight.", ["education"]),
    ("A cold front will bring heavy snow to the northern valleys tonight.", ["weather"]),
    ("Forecasters expect the storm to make landfall early Thursday.", ["weather"]),
    ("Expect sunshine and light winds for the weekend.", ["weather"]),
    ("The drought has left reservoirs at their lowest level in thirty years.", ["weather", "environment"]),
    ("Thunderstorms delayed dozens of flights at the main airport.", ["weather", "travel"]),
    ("The expansion adds a new continent, five dungeons and a higher level cap.", ["gaming"]),
    ("Speedrunners found a glitch that skips the entire second act.", ["gaming"]),
    ("The console's price drop boosted holiday sales.", ["gaming", "finance"]),
    ("The esports final drew more viewers than the national football match.", ["gaming", "sports"]),
    ("The indie puzzle game won best visual design at the awards show.", ["gaming", "art"]),
]
TEMPLATE_LINES = {4, 17, 29, 42, 55}  # 0-based indexes that get an explicit hypothesis_template


def zero_shot_items(rng: random.Random) -> list[dict[str, object]]:
    """60 texts with 3-6 distinct candidate labels; every third multi-label, five with a custom template."""
    items: list[dict[str, object]] = []
    for i, (text, relevant) in enumerate(ZERO_SHOT_TEXTS):
        n = rng.randint(max(3, len(relevant) + 1), 6)
        others = [t for t in TOPICS if t not in relevant]
        labels = relevant + rng.sample(others, n - len(relevant))
        rng.shuffle(labels)
        item: dict[str, object] = {"id": f"z-{i + 1:04d}", "text": text, "labels": labels}
        if i % 3 == 2:
            item["multi_label"] = True
        if i in TEMPLATE_LINES:
            item["hypothesis_template"] = "This text is about {}."
        items.append(item)
    return items


# ---------------------------------------------------------------------------------------------
# nli.jsonl
# ---------------------------------------------------------------------------------------------

# premise, entailed hypothesis, neutral hypothesis, contradicting hypothesis
NLI_TRIPLES: list[tuple[str, str, str, str]] = [
    (
        "A man is playing a guitar on a street corner while people walk past.",
        "Someone is playing a musical instrument outdoors.",
        "The man is playing for tips to pay his rent.",
        "The man is sitting silently in an empty room.",
    ),
    (
        "Two children are building a sandcastle at the beach.",
        "Kids are playing in the sand.",
        "The children are siblings on a summer vacation.",
        "The children are asleep in their beds.",
    ),
    (
        "The restaurant closes at 10 p.m. on weekdays and at midnight on weekends.",
        "The restaurant stays open later on weekends than on weekdays.",
        "The restaurant serves Italian food.",
        "The restaurant is open 24 hours every day.",
    ),
    (
        "A woman in a red coat is walking her dog through the snowy park.",
        "A woman is outside with an animal.",
        "The woman walks her dog every morning.",
        "The woman is swimming in a heated indoor pool.",
    ),
    (
        "The company reported record profits for the second quarter.",
        "The company made money in the second quarter.",
        "The company plans to hire more employees next year.",
        "The company lost money in the second quarter.",
    ),
    (
        "The train to Berlin was delayed by forty minutes because of a signal failure.",
        "The train did not arrive on time.",
        "Most passengers on the train were tourists.",
        "The train to Berlin arrived early.",
    ),
    (
        "Maria has lived in Toronto since she was six years old.",
        "Maria lives in a Canadian city.",
        "Maria works as a nurse.",
        "Maria has never been to Canada.",
    ),
    (
        "The chef chopped the onions and added them to the hot pan.",
        "Onions are being cooked.",
        "The chef is preparing a soup.",
        "The chef threw the onions away without cooking them.",
    ),
    (
        "All the tickets for Friday's concert sold out within an hour.",
        "There are no tickets left for Friday's concert.",
        "The concert will be held in a stadium.",
        "Plenty of tickets are still available for Friday's concert.",
    ),
    (
        "A group of cyclists is riding up a steep mountain road.",
        "People are riding bikes uphill.",
        "The cyclists are training for a race.",
        "The cyclists are riding down a flat city street.",
    ),
    (
        "The museum is free for children under twelve.",
        "A ten-year-old can visit the museum without paying.",
        "The museum has a large dinosaur exhibit.",
        "Children must pay full price to enter the museum.",
    ),
    (
        "The phone's battery died after only two hours of use.",
        "The phone ran out of power.",
        "The phone is less than a year old.",
        "The phone's battery lasted all week.",
    ),
    (
        "An elderly man is reading a newspaper on a park bench.",
        "A man is sitting outside and reading.",
        "The man is waiting for his grandson.",
        "The man is running a marathon.",
    ),
    (
        "It rained heavily all afternoon, so the football match was postponed.",
        "The match did not take place as scheduled.",
        "The match will be played next Saturday.",
        "The football match went ahead in bright sunshine.",
    ),
    (
        "The library added two hundred new science fiction books this month.",
        "The library has more books than it did last month.",
        "The new books were donated by a local author.",
        "The library removed all of its science fiction books this month.",
    ),
    (
        "A girl is painting a sunset with watercolors at the kitchen table.",
        "A child is making art.",
        "The girl is painting for a school assignment.",
        "The girl is playing soccer in the park.",
    ),
    (
        "The bakery sells out of croissants by nine every morning.",
        "The bakery's croissants are in high demand.",
        "The bakery also sells coffee.",
        "The bakery never sells any croissants.",
    ),
    (
        "Three dogs are chasing a ball across a grassy field.",
        "Animals are running outside.",
        "The dogs belong to the same family.",
        "The dogs are asleep on the sofa.",
    ),
    (
        "The software update fixed the login bug but made the app slower.",
        "The update changed how fast the app runs.",
        "Most users installed the update within a day.",
        "The login bug is still present after the update.",
    ),
    (
        "The hikers reached the summit just before sunset.",
        "The hikers made it to the top of the mountain.",
        "The hikers camped at the summit overnight.",
        "The hikers turned back before reaching the summit.",
    ),
]


def nli_items(rng: random.Random) -> list[dict[str, object]]:
    """60 pairs (20 premises x entailed/neutral/contradicting hypothesis), shuffled, ids n-0001..n-0060."""
    pairs = [(premise, hyp) for premise, *hyps in NLI_TRIPLES for hyp in hyps]
    rng.shuffle(pairs)
    return [{"id": f"n-{i:04d}", "premise": p, "hypothesis": h} for i, (p, h) in enumerate(pairs, start=1)]


# ---------------------------------------------------------------------------------------------
# rerank.jsonl
# ---------------------------------------------------------------------------------------------

# query, relevant passages (one or two)
RERANK_QUERIES: list[tuple[str, list[str]]] = [
    (
        "how do I reset my router",
        ["To reset most home routers, hold the reset button on the back for about ten seconds until the lights blink."],
    ),
    (
        "best time to plant tomatoes",
        ["Plant tomato seedlings outdoors after the last spring frost, once night temperatures stay above 10°C."],
    ),
    (
        "how long to boil an egg",
        [
            "For a soft-boiled egg, simmer for six minutes; for hard-boiled, about ten to twelve minutes.",
            "Starting eggs in cold water and bringing them to a boil gently helps prevent cracked shells.",
        ],
    ),
    (
        "what causes the seasons on Earth",
        [
            (
                "Seasons happen because Earth's axis is tilted about 23.5 degrees, so each hemisphere gets more direct"
                " sunlight for part of the year."
            )
        ],
    ),
    (
        "how to remove a coffee stain from a shirt",
        ["Blot a fresh coffee stain with cold water, then rub in a little liquid detergent before washing."],
    ),
    ("symptoms of dehydration", ["Common signs of dehydration include thirst, dark urine, dizziness and fatigue."]),
    (
        "how does compound interest work",
        [
            (
                "Compound interest means you earn interest on both your original deposit and the interest already"
                " added to it."
            ),
            "With 5% annual compounding, $1,000 grows to about $1,629 after ten years.",
        ],
    ),
    (
        "how to train a puppy to sit",
        [
            (
                "Hold a treat above the puppy's nose and move it back; when its bottom touches the floor, say 'sit' and"
                " reward it."
            )
        ],
    ),
    ("what is the capital of Australia", ["Canberra, not Sydney, is the capital city of Australia."]),
    (
        "how to speed up a slow laptop",
        [
            "Disabling unused startup programs is one of the quickest ways to make a slow laptop boot faster.",
            "Replacing an old hard drive with an SSD can make a laptop feel dramatically faster.",
        ],
    ),
    (
        "why is the sky blue",
        ["The sky looks blue because air molecules scatter short blue wavelengths of sunlight more than red ones."],
    ),
    (
        "how to keep bread fresh longer",
        ["Store bread in a cloth or paper bag at room temperature, or freeze sliced bread for longer storage."],
    ),
    ("how many hours of sleep do adults need", ["Most adults need between seven and nine hours of sleep per night."]),
    (
        "how to change a flat bike tire",
        ["To fix a flat, remove the wheel, lever the tire off, replace or patch the inner tube, and reinflate it."],
    ),
    (
        "what is photosynthesis",
        ["Photosynthesis is the process plants use to turn sunlight, water and carbon dioxide into sugar and oxygen."],
    ),
    (
        "how to write a cover letter",
        [
            (
                "A good cover letter names the role, explains why you fit it in two or three short paragraphs, and ends"
                " with a clear request for an interview."
            )
        ],
    ),
    (
        "when was the printing press invented",
        ["Johannes Gutenberg developed the movable-type printing press in Europe around 1440."],
    ),
    (
        "how to unclog a kitchen sink",
        [
            (
                "Pour in a kettle of hot water, then try a plunger; if that fails, remove and clean the U-shaped trap"
                " under the sink."
            )
        ],
    ),
    (
        "difference between a virus and bacteria",
        [
            (
                "Bacteria are single-celled living organisms, while viruses are much smaller and can only reproduce"
                " inside a host's cells."
            ),
            "Antibiotics work against bacterial infections but have no effect on viruses.",
        ],
    ),
    (
        "how to make cold brew coffee",
        ["Mix coarsely ground coffee with cold water, steep it in the fridge for 12 to 18 hours, then strain."],
    ),
    (
        "good houseplant for beginners",
        ["Pothos and snake plants are hardy houseplants that tolerate low light and the occasional missed watering."],
    ),
    ("how to calculate the area of a circle", ["The area of a circle equals pi times the radius squared."]),
    (
        "why do cats purr",
        ["Cats purr when content, but also when stressed or injured, possibly because the vibration is soothing."],
    ),
    (
        "how to improve my running endurance",
        [
            (
                "Build endurance by adding one longer, slow run each week and raising weekly distance by no more than"
                " about ten percent."
            )
        ],
    ),
    (
        "how to back up photos from my phone",
        ["Turn on automatic cloud backup in your phone's photo app, or copy the photos to a computer over USB."],
    ),
    ("what does a solar panel do", ["Solar panels convert sunlight into electricity using photovoltaic cells."]),
    (
        "how to get rid of fruit flies",
        [
            "A small dish of apple cider vinegar with a drop of dish soap traps fruit flies effectively.",
            "Throw out overripe fruit and empty the compost bin often so fruit flies have nowhere to breed.",
        ],
    ),
    (
        "tallest mountain in the world",
        ["Mount Everest, at about 8,849 meters above sea level, is the highest mountain on Earth."],
    ),
    (
        "how to cook rice on the stove",
        [
            (
                "Rinse one cup of rice, add it to one and a half cups of boiling water, cover, and simmer on low for"
                " about 15 minutes."
            )
        ],
    ),
    (
        "how to deal with jet lag",
        [
            (
                "To reduce jet lag, get morning sunlight at your destination and shift your sleep schedule a few days"
                " before you travel."
            )
        ],
    ),
    (
        "what is inflation",
        ["Inflation is the general rise in prices over time, which reduces how much a unit of money can buy."],
    ),
    (
        "how to clean a cast iron pan",
        [
            (
                "Clean cast iron with hot water and a brush, dry it immediately, and rub in a thin layer of oil to"
                " prevent rust."
            )
        ],
    ),
    (
        "how do vaccines work",
        [
            (
                "Vaccines train the immune system to recognize a germ by exposing it to a harmless piece or weakened"
                " form of it."
            )
        ],
    ),
    (
        "how far is the moon from Earth",
        ["The Moon orbits at an average distance of about 384,400 kilometers from Earth."],
    ),
    (
        "how to stop procrastinating",
        [
            "Breaking a task into a first step that takes under five minutes makes it much easier to start.",
            "Putting your phone in another room removes one of the biggest sources of distraction.",
        ],
    ),
    (
        "how to tie a tie",
        [
            (
                "For a four-in-hand knot, cross the wide end over, wrap it around once, bring it up through the neck"
                " loop, and pull it down through the front."
            )
        ],
    ),
    ("what language is spoken in Brazil", ["Portuguese is the official and most widely spoken language of Brazil."]),
    (
        "how to save money on groceries",
        [
            "Planning meals for the week and shopping with a list cuts down on impulse purchases.",
            "Store brands are often made in the same factories as name brands but cost noticeably less.",
        ],
    ),
    (
        "how to fix a squeaky door",
        ["A squeaky hinge can usually be silenced with a few drops of oil or spray lubricant worked into the pin."],
    ),
    (
        "what is machine learning",
        [
            (
                "Machine learning is a field of computer science in which programs get better at a task by learning"
                " patterns from data."
            )
        ],
    ),
]

RERANK_GENERIC_DISTRACTORS = [
    "The city council meets on the first Tuesday of every month.",
    "Our store hours are 9 a.m. to 6 p.m., Monday through Saturday.",
    "The festival features local bands, food trucks and a craft market.",
    "Penguins are flightless birds that live almost entirely in the Southern Hemisphere.",
    "The novel follows three generations of a family running a seaside hotel.",
    "Parking is free after 7 p.m. and all day on Sundays.",
    "The museum's new wing is dedicated to modern sculpture.",
    "Bamboo is one of the fastest-growing plants in the world.",
    "Please remember to bring a reusable bag when you shop.",
    "The team's new jerseys will be unveiled at the season opener.",
    "Chess originated in India and spread to Persia before reaching Europe.",
    "The bus route was changed to avoid the construction on Main Street.",
]


def rerank_items(rng: random.Random) -> list[dict[str, object]]:
    """40 queries, each with 4-10 documents of which one or two are relevant; top_k=3 on every third line."""
    items: list[dict[str, object]] = []
    for i, (query, relevant) in enumerate(RERANK_QUERIES):
        pool = RERANK_GENERIC_DISTRACTORS + [p for j, (_, ps) in enumerate(RERANK_QUERIES) if j != i for p in ps]
        n = rng.randint(4, 10)
        documents = rng.sample(pool, n - len(relevant))
        for passage in relevant:
            documents.insert(rng.randint(0, len(documents)), passage)
        item: dict[str, object] = {"id": f"r-{i + 1:04d}", "query": query, "documents": documents}
        if i % 3 == 0:
            item["top_k"] = 3
        items.append(item)
    return items


# ---------------------------------------------------------------------------------------------
# bad_input.jsonl (hand-written; one raw non-JSON line)
# ---------------------------------------------------------------------------------------------

BAD_TEXT_BYTES = 20_000


def bad_input_lines() -> list[str]:
    """20 raw lines for the classify task: valid items interleaved with one example of each kind of bad input."""
    filler = "This review keeps going because the reviewer had a great deal to say about the toaster. "
    big = (filler * (BAD_TEXT_BYTES // len(filler) + 1))[:BAD_TEXT_BYTES]
    assert len(big.encode("utf-8")) == BAD_TEXT_BYTES

    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False)

    return [
        dump({"id": "b-0001", "text": "I love this phone, the camera is amazing."}),  # valid
        dump({"id": "b-0002", "text": ""}),  # empty text
        dump({"id": "b-0003", "text": "Terrible service, I waited an hour for nothing."}),  # valid
        dump({"id": "b-0004", "text": "   \t  "}),  # whitespace-only text
        dump({"id": "b-0005"}),  # missing "text"
        dump({"id": "b-0006", "text": 42}),  # text is a number
        dump({"id": "b-0007", "text": "The hotel room was spotless and the staff were lovely."}),  # valid
        dump({"id": "b-0008", "text": ["not", "a", "string"]}),  # text is a list
        dump({"id": "b-0009", "text": "Great value for the price.", "label": "positive"}),  # unknown extra field
        "this is not json",  # not JSON at all
        dump(["b-0011", "a JSON array instead of an object"]),  # array, not an object
        dump({"id": "b-0012", "text": "The sequel was even better than the original."}),  # valid
        dump({"id": "b-0001", "text": "Same id as the first line, so this one is a duplicate."}),  # duplicate id
        dump({"id": 17, "text": "The id of this item is a number, not a string."}),  # numeric id
        dump({"text": "This item has no id at all."}),  # missing id
        dump({"id": "b-0016", "text": "A NUL character \u0000 hides in this text."}),  # NUL, written as \u0000
        dump({"id": "b-0017", "text": big}),  # 20,000 bytes, over the 16 KiB limit
        dump({"id": "b-0018", "text": "Worst pizza I've had in years, cold and soggy."}),  # valid
        dump({"id": "b-0019", "text": "Absolutely loved the concert last night! 🎶"}),  # valid
        dump({"id": "b-0020", "text": "Le service était lent et la soupe était froide."}),  # valid
    ]


# ---------------------------------------------------------------------------------------------


def write_jsonl(path: Path, items: Sequence[dict[str, object]]) -> None:
    """Write one compact JSON object per line (UTF-8, no ASCII escaping), newline-terminated."""
    write_lines(path, [json.dumps(item, ensure_ascii=False) for item in items])


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """Write raw lines, each terminated by a single newline."""
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
    print(f"wrote {path} ({len(lines)} lines)")


def main(argv: Sequence[str]) -> int:
    """Generate every example file into ``argv[0]`` (default: this script's directory)."""
    out_dir = Path(argv[0]) if argv else Path(__file__).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    # One generator per file, so editing one file's banks does not reshuffle the others.
    write_jsonl(out_dir / "moderation.jsonl", moderation_items(random.Random(f"{SEED}-moderation")))
    write_jsonl(out_dir / "sentiment.jsonl", sentiment_items(random.Random(f"{SEED}-sentiment")))
    write_jsonl(out_dir / "zero_shot.jsonl", zero_shot_items(random.Random(f"{SEED}-zero_shot")))
    write_jsonl(out_dir / "nli.jsonl", nli_items(random.Random(f"{SEED}-nli")))
    write_jsonl(out_dir / "rerank.jsonl", rerank_items(random.Random(f"{SEED}-rerank")))
    write_lines(out_dir / "bad_input.jsonl", bad_input_lines())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
