"""Fixed sequence lists of the evaluation benchmarks (data, not code).

Sequence names, frame ranges and annotation paths of the official benchmark definitions (LaSOT test protocol II,
LaSOT extension, AVisT, NfS-30, UAV123 with its split long videos, OTB-2015 with its special cases), kept as
compact text and expanded on first use.
"""
from __future__ import annotations

import re
from functools import lru_cache

# LaSOT test (protocol II, 280 sequences) in benchmark order: class:ids
_LASOT_TEST = """
airplane:1,9,13,15 basketball:1,6,7,11 bear:2,4,6,17 bicycle:2,7,9,18 bird:2,3,15,17 boat:3,4,12,17
book:3,10,11,19 bottle:1,12,14,18 bus:2,5,17,19 car:2,6,9,17 cat:1,3,18,20 cattle:2,7,12,13
spider:14,16,18,20 coin:3,6,7,18 crab:3,6,12,18 surfboard:12,4,5,8 cup:1,4,7,17 deer:4,8,10,14
dog:1,7,15,19 guitar:3,8,10,16 person:1,5,10,12 pig:2,10,13,18 rubicCube:1,6,14,19 swing:10,14,17,20
drone:13,15,2,7 pool:12,15,3,7 rabbit:10,13,17,19 racing:10,15,16,20 robot:1,19,5,8 sepia:13,16,6,8
sheep:3,5,7,9 skateboard:16,19,3,8 tank:14,16,6,9 tiger:12,18,4,6 train:1,11,20,7 truck:16,3,6,7
turtle:16,5,8,9 umbrella:17,19,2,9 yoyo:15,17,19,7 zebra:10,14,16,17 elephant:1,12,16,18 goldfish:3,7,8,10
hat:1,2,5,18 kite:4,6,10,15 motorcycle:1,3,9,18 mouse:1,8,9,17 flag:3,9,5,2 frog:3,4,20,9
gametarget:1,2,7,13 hand:2,3,9,16 helmet:5,11,19,13 licenseplate:6,12,13,15 electricfan:1,10,18,20 chameleon:3,6,11,20
crocodile:3,4,10,14 gecko:1,5,16,19 fox:2,3,5,20 giraffe:2,10,13,15 gorilla:4,6,9,13 hippo:1,7,9,20
horse:1,4,12,15 kangaroo:2,5,11,14 leopard:1,7,16,20 lion:1,5,12,20 lizard:1,3,6,13 microphone:2,6,14,16
monkey:3,4,9,17 shark:2,3,5,6 squirrel:8,11,13,19 volleyball:1,13,18,19
"""

# LaSOT extension (150 sequences): 15 classes x ids 1..10
_LASOT_EXTENSION_CLASSES = "atv badminton cosplay dancingshoe footbag frisbee jianzi lantern misc opossum paddle raccoon rhino skatingshoe wingsuit"

_AVIST = """
Phasmid_insect_camouflage air_show airplane_in_rain airplane_in_sandstorm airplane_in_smoke ambulance_in_night_1
ambulance_in_night_2 animal_in_desert animal_in_wildfire archival_video_man archival_video_rollercoster armyman_camouflage
badminton_net_in_heavy_storm ball_fast_shot balloon_fight balloon_man bear_in_snow bench_in_hailstorm beyblade_competition
bicycle_in_glaring_sun black_car_in_sand_storm black_cat_1 blue_bus_in_heavy_rain boat_in_sea_storm boats_race
boy_in_swimming_pool bulldozer_in_snow burj_khalifa_show butterfly_dance caemoflaging_octopus car_haze_storm car_in_desert
car_in_fire_smoke car_in_fog_shaking_cam car_in_hurricane car_in_hurricane_2 car_in_hurricane_3 car_in_smoke
car_in_smoke_night cattle_heavy_rain copperhead_snake crazy_skiing cycling_snow_low_visibility deer_in_fog ducklings_stairs
elephant_in_sand fast_football_in_haze firefighters_in_heavy_smoke fish_in_sea fish_in_sea_2 flag_heavy_fog_snow flatfish_0
flatfish_1 flatfish_4 flight_black_and_white_footage flounder_6 flounder_9 flying_bees_1 flying_bees_2 girl_in_hula_hoop
grasshopper_0 helicopter_in_dust_storm helicopter_in_hurricane helicoptor_in_firesmoke helicoptor_in_tornado
jaguars_fighting kids_on_swings kite_flying_fog lady_dancing_in_fog lichen_katydid man_in_heavy_blizzard
man_in_hula_hoop_night man_in_sandstorm man_in_whirlpool monkey_fight monkey_on_tree motorcycle2_in_heavy_rain
motorcycle_in_sandstorm peacock_dance penguin_in_fog person_in_sea_rage person_walking_in_snow_1 plaice
plane_landing_heavy_fog polar_bear polar_bear_3 pygmy_seahorse_1 pygmy_seahorse_2 rally_in_smoke_night rusty_spotted_cat_1
sailing_thunderstorm scorpion_camouflage seagulls_flying ship_heavy_fog ship_in_sea_storm ship_in_thunderstorm_sea
skateboard_in_rain skydiving_1 small_cricket_ball_fast smallfish snow_leopard_2 spider_camouflage spider_camouflage_2
stick_insect_0 stick_insect_1 stonefish surfer_in_bioluminescent_sea surfer_in_storm_1 surfer_in_storm_2 surfing_in_fog_3
swimming_competition_old_footage train_in_dense_fog umbrella_in_heavy_storm underwater_nuclear_burst vehichle_in_sun_glare
vehicle_in_fire water_splashing white_signboard_in_storm windmill_in_tornado zebra_in_water
"""

# NfS-30: name end_frame object_class has_occlusion (start 1, 5-digit jpg, tab-delimited anno/nfs_<name>.txt)
_NFS = """
Gymnastics 368 person 0
MachLoop_jet 99 aircraft 0
Skiing_red 69 person 0
Skydiving 196 person 1
airboard_1 425 ball 0
airplane_landing 81 aircraft 0
airtable_3 482 ball 0
basketball_1 282 ball 0
basketball_2 102 ball 0
basketball_3 421 ball 0
basketball_6 224 ball 0
basketball_7 240 person 1
basketball_player 369 person 1
basketball_player_2 437 person 0
beach_flipback_person 61 person_head 0
bee 45 insect 0
biker_acrobat 128 bicycle 0
biker_all_1 113 person 0
biker_head_2 132 person_head 0
biker_head_3 254 person_head 0
biker_upper_body 194 person 0
biker_whole_body 572 person 1
billiard_2 604 ball 0
billiard_3 698 ball 0
billiard_6 771 ball 0
billiard_7 724 ball 0
billiard_8 778 ball 0
bird_2 476 bird 0
book 288 other 0
bottle 2103 other 0
bowling_1 303 ball 1
bowling_2 710 ball 1
bowling_3 271 ball 1
bowling_6 260 ball 0
bowling_ball 275 ball 1
bunny 705 mammal 0
car 2020 car 1
car_camaro 36 car 0
car_drifting 173 car 0
car_jumping 22 car 0
car_rc_rolling 62 car 0
car_rc_rotating 80 car 0
car_side 108 car 0
car_white 2063 car 0
cheetah 167 mammal 1
cup 1281 other 0
cup_2 182 other 0
dog 1030 dog 1
dog_1 168 dog 0
dog_2 594 dog 1
dog_3 200 dog 0
dogs 198 dog 1
dollar 1426 other 0
drone 70 aircraft 0
ducks_lake 107 bird 0
exit 359 other 0
first 435 other 0
flower 448 other 0
footbal_skill 131 ball 1
helicopter 310 aircraft 0
horse_jumping 117 horse 1
horse_running 139 horse 0
iceskating_6 603 person 0
jellyfish_5 746 invertebrate 0
kid_swing 169 person 0
motorcross 39 vehicle 1
motorcross_kawasaki 65 vehicle 0
parkour 58 person_head 0
person_scooter 413 person 1
pingpong_2 1277 ball 0
pingpong_7 1290 ball 0
pingpong_8 296 ball 0
purse 968 other 0
rubber 1328 other 0
running 677 person 0
running_100_m 313 person 1
running_100_m_2 337 person 1
running_2 363 person 0
shuffleboard_1 42 other 0
shuffleboard_2 41 other 0
shuffleboard_4 62 other 0
shuffleboard_5 32 other 0
shuffleboard_6 52 other 0
shuffletable_2 372 other 0
shuffletable_3 368 other 0
shuffletable_4 101 other 0
ski_long 274 person 0
soccer_ball 163 ball 0
soccer_ball_2 1934 ball 0
soccer_ball_3 1381 ball 0
soccer_player_2 475 person 0
soccer_player_3 319 person 1
stop_sign 302 other 0
suv 2584 car 0
tiger 1556 mammal 0
walking 555 person 0
walking_3 1427 person 0
water_ski_2 47 person 0
yoyo 67 other 0
zebra_fish 671 fish 0
"""

# UAV123: sequence start end object_class; frames data_seq/UAV123/<folder>/%06d.jpg where <folder> drops a
# trailing _<k> (the sub-sequences of long videos), annotation anno/UAV123/<sequence>.txt
_UAV = """
bike1 1 3085 vehicle
bike2 1 553 vehicle
bike3 1 433 vehicle
bird1_1 1 253 bird
bird1_2 775 1477 bird
bird1_3 1573 2437 bird
boat1 1 901 vessel
boat2 1 799 vessel
boat3 1 901 vessel
boat4 1 553 vessel
boat5 1 505 vessel
boat6 1 805 vessel
boat7 1 535 vessel
boat8 1 685 vessel
boat9 1 1399 vessel
building1 1 469 other
building2 1 577 other
building3 1 829 other
building4 1 787 other
building5 1 481 other
car1_1 1 751 car
car1_2 751 1627 car
car1_3 1627 2629 car
car10 1 1405 car
car11 1 337 car
car12 1 499 car
car13 1 415 car
car14 1 1327 car
car15 1 469 car
car16_1 1 415 car
car16_2 415 1993 car
car17 1 1057 car
car18 1 1207 car
car1_s 1 1475 car
car2 1 1321 car
car2_s 1 320 car
car3 1 1717 car
car3_s 1 1300 car
car4 1 1345 car
car4_s 1 830 car
car5 1 745 car
car6_1 1 487 car
car6_2 487 1807 car
car6_3 1807 2953 car
car6_4 2953 3925 car
car6_5 3925 4861 car
car7 1 1033 car
car8_1 1 1357 car
car8_2 1357 2575 car
car9 1 1879 car
group1_1 1 1333 person
group1_2 1333 2515 person
group1_3 2515 3925 person
group1_4 3925 4873 person
group2_1 1 907 person
group2_2 907 1771 person
group2_3 1771 2683 person
group3_1 1 1567 person
group3_2 1567 2827 person
group3_3 2827 4369 person
group3_4 4369 5527 person
person1 1 799 person
person10 1 1021 person
person11 1 721 person
person12_1 1 601 person
person12_2 601 1621 person
person13 1 883 person
person14_1 1 847 person
person14_2 847 1813 person
person14_3 1813 2923 person
person15 1 1339 person
person16 1 1147 person
person17_1 1 1501 person
person17_2 1501 2347 person
person18 1 1393 person
person19_1 1 1243 person
person19_2 1243 2791 person
person19_3 2791 4357 person
person1_s 1 1600 person
person2_1 1 1189 person
person2_2 1189 2623 person
person20 1 1783 person
person21 1 487 person
person22 1 199 person
person23 1 397 person
person2_s 1 250 person
person3 1 643 person
person3_s 1 505 person
person4_1 1 1501 person
person4_2 1501 2743 person
person5_1 1 877 person
person5_2 877 2101 person
person6 1 901 person
person7_1 1 1249 person
person7_2 1249 2065 person
person8_1 1 1075 person
person8_2 1075 1525 person
person9 1 661 person
truck1 1 463 truck
truck2 1 385 truck
truck3 1 535 truck
truck4_1 1 577 truck
truck4_2 577 1261 truck
uav1_1 1 1555 aircraft
uav1_2 1555 2377 aircraft
uav1_3 2473 3469 aircraft
uav2 1 133 aircraft
uav3 1 265 aircraft
uav4 1 157 aircraft
uav5 1 139 aircraft
uav6 1 109 aircraft
uav7 1 373 aircraft
uav8 1 301 aircraft
wakeboard1 1 421 person
wakeboard10 1 469 person
wakeboard2 1 733 person
wakeboard3 1 823 person
wakeboard4 1 697 person
wakeboard5 1 1675 person
wakeboard6 1 1165 person
wakeboard7 1 199 person
wakeboard8 1 1543 person
wakeboard9 1 355 person
"""

# OTB-2015: name folder start end digits annotation_file object_class init_omit; frames <folder>/img/%0<digits>d.jpg
_OTB = """
Basketball Basketball 1 725 4 groundtruth_rect.txt person 0
Biker Biker 1 142 4 groundtruth_rect.txt person_head 0
Bird1 Bird1 1 408 4 groundtruth_rect.txt bird 0
Bird2 Bird2 1 99 4 groundtruth_rect.txt bird 0
BlurBody BlurBody 1 334 4 groundtruth_rect.txt person 0
BlurCar1 BlurCar1 247 988 4 groundtruth_rect.txt car 0
BlurCar2 BlurCar2 1 585 4 groundtruth_rect.txt car 0
BlurCar3 BlurCar3 3 359 4 groundtruth_rect.txt car 0
BlurCar4 BlurCar4 18 397 4 groundtruth_rect.txt car 0
BlurFace BlurFace 1 493 4 groundtruth_rect.txt face 0
BlurOwl BlurOwl 1 631 4 groundtruth_rect.txt other 0
Board Board 1 698 5 groundtruth_rect.txt other 0
Bolt Bolt 1 350 4 groundtruth_rect.txt person 0
Bolt2 Bolt2 1 293 4 groundtruth_rect.txt person 0
Box Box 1 1161 4 groundtruth_rect.txt other 0
Boy Boy 1 602 4 groundtruth_rect.txt face 0
Car1 Car1 1 1020 4 groundtruth_rect.txt car 0
Car2 Car2 1 913 4 groundtruth_rect.txt car 0
Car24 Car24 1 3059 4 groundtruth_rect.txt car 0
Car4 Car4 1 659 4 groundtruth_rect.txt car 0
CarDark CarDark 1 393 4 groundtruth_rect.txt car 0
CarScale CarScale 1 252 4 groundtruth_rect.txt car 0
ClifBar ClifBar 1 472 4 groundtruth_rect.txt other 0
Coke Coke 1 291 4 groundtruth_rect.txt other 0
Couple Couple 1 140 4 groundtruth_rect.txt person 0
Coupon Coupon 1 327 4 groundtruth_rect.txt other 0
Crossing Crossing 1 120 4 groundtruth_rect.txt person 0
Crowds Crowds 1 347 4 groundtruth_rect.txt person 0
Dancer Dancer 1 225 4 groundtruth_rect.txt person 0
Dancer2 Dancer2 1 150 4 groundtruth_rect.txt person 0
David David 300 770 4 groundtruth_rect.txt face 0
David2 David2 1 537 4 groundtruth_rect.txt face 0
David3 David3 1 252 4 groundtruth_rect.txt person 0
Deer Deer 1 71 4 groundtruth_rect.txt mammal 0
Diving Diving 1 215 4 groundtruth_rect.txt person 0
Dog Dog 1 127 4 groundtruth_rect.txt dog 0
Dog1 Dog1 1 1350 4 groundtruth_rect.txt dog 0
Doll Doll 1 3872 4 groundtruth_rect.txt other 0
DragonBaby DragonBaby 1 113 4 groundtruth_rect.txt face 0
Dudek Dudek 1 1145 4 groundtruth_rect.txt face 0
FaceOcc1 FaceOcc1 1 892 4 groundtruth_rect.txt face 0
FaceOcc2 FaceOcc2 1 812 4 groundtruth_rect.txt face 0
Fish Fish 1 476 4 groundtruth_rect.txt other 0
FleetFace FleetFace 1 707 4 groundtruth_rect.txt face 0
Football Football 1 362 4 groundtruth_rect.txt person_head 0
Football1 Football1 1 74 4 groundtruth_rect.txt face 0
Freeman1 Freeman1 1 326 4 groundtruth_rect.txt face 0
Freeman3 Freeman3 1 460 4 groundtruth_rect.txt face 0
Freeman4 Freeman4 1 283 4 groundtruth_rect.txt face 0
Girl Girl 1 500 4 groundtruth_rect.txt face 0
Girl2 Girl2 1 1500 4 groundtruth_rect.txt person 0
Gym Gym 1 767 4 groundtruth_rect.txt person 0
Human2 Human2 1 1128 4 groundtruth_rect.txt person 0
Human3 Human3 1 1698 4 groundtruth_rect.txt person 0
Human4_2 Human4 1 667 4 groundtruth_rect.2.txt person 0
Human5 Human5 1 713 4 groundtruth_rect.txt person 0
Human6 Human6 1 792 4 groundtruth_rect.txt person 0
Human7 Human7 1 250 4 groundtruth_rect.txt person 0
Human8 Human8 1 128 4 groundtruth_rect.txt person 0
Human9 Human9 1 305 4 groundtruth_rect.txt person 0
Ironman Ironman 1 166 4 groundtruth_rect.txt person_head 0
Jogging_1 Jogging 1 307 4 groundtruth_rect.1.txt person 0
Jogging_2 Jogging 1 307 4 groundtruth_rect.2.txt person 0
Jump Jump 1 122 4 groundtruth_rect.txt person 0
Jumping Jumping 1 313 4 groundtruth_rect.txt face 0
KiteSurf KiteSurf 1 84 4 groundtruth_rect.txt face 0
Lemming Lemming 1 1336 4 groundtruth_rect.txt other 0
Liquor Liquor 1 1741 4 groundtruth_rect.txt other 0
Man Man 1 134 4 groundtruth_rect.txt face 0
Matrix Matrix 1 100 4 groundtruth_rect.txt person_head 0
Mhyang Mhyang 1 1490 4 groundtruth_rect.txt face 0
MotorRolling MotorRolling 1 164 4 groundtruth_rect.txt vehicle 0
MountainBike MountainBike 1 228 4 groundtruth_rect.txt bicycle 0
Panda Panda 1 1000 4 groundtruth_rect.txt mammal 0
RedTeam RedTeam 1 1918 4 groundtruth_rect.txt vehicle 0
Rubik Rubik 1 1997 4 groundtruth_rect.txt other 0
Shaking Shaking 1 365 4 groundtruth_rect.txt face 0
Singer1 Singer1 1 351 4 groundtruth_rect.txt person 0
Singer2 Singer2 1 366 4 groundtruth_rect.txt person 0
Skater Skater 1 160 4 groundtruth_rect.txt person 0
Skater2 Skater2 1 435 4 groundtruth_rect.txt person 0
Skating1 Skating1 1 400 4 groundtruth_rect.txt person 0
Skating2_1 Skating2 1 473 4 groundtruth_rect.1.txt person 0
Skating2_2 Skating2 1 473 4 groundtruth_rect.2.txt person 0
Skiing Skiing 1 81 4 groundtruth_rect.txt person 0
Soccer Soccer 1 392 4 groundtruth_rect.txt face 0
Subway Subway 1 175 4 groundtruth_rect.txt person 0
Surfer Surfer 1 376 4 groundtruth_rect.txt person_head 0
Suv Suv 1 945 4 groundtruth_rect.txt car 0
Sylvester Sylvester 1 1345 4 groundtruth_rect.txt other 0
Tiger1 Tiger1 1 354 4 groundtruth_rect.txt other 5
Tiger2 Tiger2 1 365 4 groundtruth_rect.txt other 0
Toy Toy 1 271 4 groundtruth_rect.txt other 0
Trans Trans 1 124 4 groundtruth_rect.txt other 0
Trellis Trellis 1 569 4 groundtruth_rect.txt face 0
Twinnings Twinnings 1 472 4 groundtruth_rect.txt other 0
Vase Vase 1 271 4 groundtruth_rect.txt other 0
Walking Walking 1 412 4 groundtruth_rect.txt person 0
Walking2 Walking2 1 500 4 groundtruth_rect.txt person 0
Woman Woman 1 597 4 groundtruth_rect.txt person 0
"""


@lru_cache(maxsize=None)
def lasot_test_names() -> list[str]:
    names = []
    for group in _LASOT_TEST.split():
        cls, ids = group.split(":")
        names.extend(f"{cls}-{i}" for i in ids.split(","))
    return names


@lru_cache(maxsize=None)
def lasot_extension_names() -> list[str]:
    return [f"{cls}-{i}" for cls in _LASOT_EXTENSION_CLASSES.split() for i in range(1, 11)]


@lru_cache(maxsize=None)
def lasot_train_names() -> list[str]:
    """The LaSOT training split (1120 names): every class-id (70 classes x 1..20) not in the test list."""
    test = lasot_test_names()
    classes = sorted({n.rsplit("-", 1)[0] for n in test})
    held_out = set(test)
    return [f"{c}-{i}" for c in classes for i in range(1, 21) if f"{c}-{i}" not in held_out]


@lru_cache(maxsize=None)
def avist_names() -> list[str]:
    return _AVIST.split()


def _nfs() -> list[dict]:
    out = []
    for line in _NFS.strip().splitlines():
        name, end, cls, occ = line.split()
        out.append(dict(name=f"nfs_{name}", path=f"sequences/{name}", start=1, end=int(end), nz=5, ext="jpg",
                        anno=f"anno/nfs_{name}.txt", object_class=cls.replace("_", " "), occlusion=occ == "1"))
    return out


def _uav() -> list[dict]:
    out = []
    for line in _UAV.strip().splitlines():
        seq, start, end, cls = line.split()
        folder = re.sub(r"_\d+$", "", seq)
        out.append(dict(name=f"uav_{seq}", path=f"data_seq/UAV123/{folder}", start=int(start), end=int(end), nz=6,
                        ext="jpg", anno=f"anno/UAV123/{seq}.txt", object_class=cls))
    return out


def _otb() -> list[dict]:
    out = []
    for line in _OTB.strip().splitlines():
        name, folder, start, end, nz, anno, cls, omit = line.split()
        out.append(dict(name=f"otb_{name}", path=f"{folder}/img", start=int(start), end=int(end), nz=int(nz),
                        ext="jpg", anno=f"{folder}/{anno}", object_class=cls.replace("_", " "),
                        init_omit=int(omit)))
    return out


_TABLES = {"nfs": _nfs, "uav": _uav, "otb": _otb}


@lru_cache(maxsize=None)
def _table(name: str) -> tuple:
    return tuple(_TABLES[name]())


def table(name: str) -> list[dict]:
    """Entries of the 'nfs', 'uav' or 'otb' table: name, path, start, end (inclusive), nz (digits), ext, anno,
    object_class, and init_omit (frames and annotation rows dropped at the start; OTB Tiger1)."""
    if name not in _TABLES:
        raise KeyError(f"no sequence table for {name!r}; tables exist for {', '.join(_TABLES)}")
    return [dict(e) for e in _table(name)]
